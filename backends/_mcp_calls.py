"""The MCP calls both clients offer, written once: :class:`MCPCalls`.

:class:`~securemcp.transport.WebSocketClient` (with ``mcp=True``) and
:class:`~securemcp.transport.HTTPClient` promise the same API; each says how
it sends one request (:meth:`MCPCalls._request`, :meth:`MCPCalls._tool_call`),
and this class turns that into ``request``, ``call_tool``, ``invoke_tool``,
``list_tools`` and ``ping``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import EllipsisType, TracebackType
from typing import Any, Self

import anyio

from securemcp.errors import LocalProtocolError
from securemcp.protocol.mcp_stateless import SERVER_DISCOVER

from .mcp_client import (
    ProgressCallback,
    ToolResult,
    list_all_tools,
    parse_tool_result,
    tool_call_params,
)

__all__ = ["CallTimeout", "MCPCalls"]

CallTimeout = float | EllipsisType | None
"""A call's ``timeout``: seconds, ``None`` to wait forever, ``...`` for the client's default."""


class MCPCalls(abc.ABC):
    """An MCP client's calls, over whatever :meth:`_request` sends them with."""

    timeout: float | None
    """The default per-call timeout in seconds (``None``: wait forever)."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection (and the MCP session)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection; harmless when closed already."""

    @abc.abstractmethod
    async def _request(self, method: str, params: Any, limit: float | None) -> Any:
        """Send one request; its result, or what its answer (or its absence) raises."""

    @abc.abstractmethod
    async def _tool_call(
        self, params: dict[str, Any], limit: float | None, on_progress: ProgressCallback | None
    ) -> Any:
        """Send one ``tools/call``, whose errors map as a tool call's, following its progress."""

    @abc.abstractmethod
    def _stateless(self) -> bool:
        """Whether the connection speaks 2026-07-28 (no ``ping`` there)."""

    @property
    @abc.abstractmethod
    def speaks_mcp(self) -> bool:
        """Whether this connection speaks MCP."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def request(self, method: str, params: Any = None, *, timeout: CallTimeout = ...) -> Any:
        """Send any request and return its ``result``.

        ``timeout`` defaults to the client's; ``None`` waits forever. Raises the
        :class:`~securemcp.errors.RPCError` subclass of an error answer,
        :class:`~securemcp.errors.RequestTimeout`, or
        :class:`~securemcp.errors.ConnectionClosed`. ``params`` that JSON cannot
        hold raise before anything is sent.
        """
        return await self._request(method, params, self._limit(timeout))

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: CallTimeout = ...,
        on_progress: ProgressCallback | None = None,
    ) -> ToolResult:
        """MCP ``tools/call``: run tool ``name`` and return its :class:`ToolResult`.

        A tool's failure is a result with ``is_error`` set, not an exception;
        protocol errors (unknown tool: -32602) raise their
        :class:`~securemcp.errors.RPCError`. ``on_progress(update)`` receives
        the tool's progress reports in this task, before the result returns.
        When the wait ends early (timeout, cancellation), the server is told
        (``notifications/cancelled``; at 2026-07-28 over HTTP, by closing the
        answer's stream).
        """
        if not self.speaks_mcp:
            raise LocalProtocolError(
                "call_tool needs an MCP connection (WebSocketClient(mcp=True))"
            )
        params = tool_call_params(name, arguments)
        result = await self._tool_call(params, self._limit(timeout), on_progress)
        return parse_tool_result(result)

    async def invoke_tool(
        self, name: str, params: Mapping[str, Any] | None = None, *, timeout: CallTimeout = ...
    ) -> Any:
        """:meth:`call_tool` then :meth:`ToolResult.value`: a failing tool raises ToolError.

        An unknown tool raises :class:`~securemcp.errors.InvalidParams`, and bad
        arguments, like a failing tool, :class:`~securemcp.errors.ToolError`.
        """
        return (await self.call_tool(name, params, timeout=timeout)).value()

    async def list_tools(self, *, timeout: CallTimeout = ...) -> list[dict[str, Any]]:
        """The server's tools: one dict each (``name``, ``description``, ``inputSchema``, ...).

        Every page of ``tools/list``, in the server's order.
        """
        limit = self._limit(timeout)
        return await list_all_tools(lambda params: self._request("tools/list", params, limit))

    async def ping(self, *, timeout: CallTimeout = ...) -> float:
        """Send a ``ping`` request; return the round trip in seconds.

        MCP 2026-07-28 has no ``ping``: on such a connection this times a
        ``server/discover`` instead.
        """
        method = SERVER_DISCOVER if self._stateless() else "ping"
        start = anyio.current_time()
        await self._request(method, None, self._limit(timeout))
        return anyio.current_time() - start

    def _limit(self, timeout: CallTimeout) -> float | None:
        """A call's timeout: its own, or the client's default for ``...``."""
        return self.timeout if isinstance(timeout, EllipsisType) else timeout
