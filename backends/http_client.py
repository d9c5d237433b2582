"""The MCP Streamable HTTP client: :class:`HTTPClient`, on asyncio (and uvloop) or trio.

The clients of the official MCP SDK 2.x have no WebSocket transport: they
speak Streamable HTTP, one POST per JSON-RPC message. This client speaks it to
any MCP server, with the API of ``WebSocketClient(url, mcp=True)``:
:meth:`~HTTPClient.list_tools`, :meth:`~HTTPClient.call_tool`,
:meth:`~HTTPClient.invoke_tool`, :meth:`~HTTPClient.ping`, the same errors.

Two eras of the transport, chosen on connecting (``protocol="auto"``):

- 2026-07-28, stateless: ``server/discover`` first; then every request carries
  ``_meta`` (``io.modelcontextprotocol/protocolVersion``, the client's
  capabilities and info) and the ``MCP-Protocol-Version``, ``Mcp-Method`` and
  (for ``tools/call``) ``Mcp-Name`` headers. No session.
- 2025-11-25 down to 2024-11-05, with a handshake: when the server does not
  answer ``server/discover`` (any JSON-RPC error, any HTTP status but 401/403),
  ``initialize`` over POST, the ``Mcp-Session-Id`` it may give echoed on every
  later request with ``MCP-Protocol-Version``, and a DELETE of the session on
  closing.

Either way an answer is one JSON body or a ``text/event-stream`` scoped to the
request, whose progress notifications go to the call's ``on_progress`` (in the
caller's task, before the result returns). HTTP/1.1 itself (h11 over anyio
streams, keep-alive connections) is :mod:`._http_transport`'s; this module is
the MCP session on top of it.

Errors, at the edge: the :class:`OSError` of a failed TCP connect;
:class:`HTTPRejected` (a :class:`~securemcp.errors.HandshakeRejected`) for an
HTTP status without a JSON-RPC answer (401 and 403 among them, with their
``www-authenticate``); :class:`~securemcp.errors.RequestTimeout`; the
:class:`~securemcp.errors.RPCError` subclass of an error answer;
:class:`~securemcp.errors.ConnectionClosed` when the server cut an answer short.
"""

from __future__ import annotations

import itertools
import logging
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import anyio

from securemcp import __version__ as securemcp_version
from securemcp.errors import (
    ConnectionClosed,
    InternalError,
    LocalProtocolError,
    RequestTimeout,
    RPCError,
)
from securemcp.param_headers import Path
from securemcp.protocol.mcp import TOOLS_CALL, UnsupportedProtocolVersion
from securemcp.protocol.mcp_stateless import SERVER_DISCOVER

from ._http_mcp import (
    MODERN_PROTOCOL_VERSION,
    CallProgress,
    NotificationCallback,
    answer_result,
    deliver_notification,
    learn_param_headers,
    routing_headers,
    session_headers,
)
from ._http_transport import Answer, Headers, HTTPRejected, HTTPTransport, Listener
from ._mcp_calls import CallTimeout, MCPCalls
from .mcp_client import (
    CLIENT_NAME,
    ProgressCallback,
    ServerInfo,
    discover_server_info,
    initialize_params,
    parse_initialize_result,
    request_meta,
    with_meta,
)

__all__ = [
    "MODERN_PROTOCOL_VERSION",
    "HTTPClient",
    "HTTPRejected",
    "NotificationCallback",
]

logger = logging.getLogger("securemcp.client")


class HTTPClient(MCPCalls):
    """An MCP client over Streamable HTTP (``http://`` or ``https://``).

    Use it as an async context manager, on asyncio or trio::

        async with HTTPClient("http://localhost:8000/mcp") as client:
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"message": "hi"})

    Any number of calls may be in flight at once, each on a connection of its own.

    :param url: the server's MCP endpoint, ``http://host[:port]/path`` or ``https://...``.
    :param headers: extra headers sent with every request.
    :param token: a bearer token, sent as ``Authorization: Bearer <token>``.
    :param ssl: for ``https://``, an :class:`ssl.SSLContext`, or ``None``/``True``
        for :func:`ssl.create_default_context`.
    :param timeout: default per-call timeout in seconds (``None``: wait forever).
    :param connect_timeout: bound on the opening (``server/discover`` or ``initialize``).
    :param close_timeout: bound on closing (the DELETE of a session).
    :param protocol: ``"auto"`` (``server/discover``, else ``initialize``),
        ``"modern"`` (2026-07-28 only) or ``"legacy"`` (``initialize`` only).
    :param on_notification: ``handler(method, params)`` for the notifications an
        answer's event stream carries that are not a call's progress; without
        it they are logged at debug level and dropped.
    :param max_message_size: the largest answer (or event) accepted, in bytes.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        token: str | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        protocol: Literal["auto", "modern", "legacy"] = "auto",
        on_notification: NotificationCallback | None = None,
        max_message_size: int = 16 * 1024 * 1024,
    ) -> None:
        if protocol not in ("auto", "modern", "legacy"):
            raise ValueError(f"protocol must be 'auto', 'modern' or 'legacy', not {protocol!r}")
        self.url = url
        self._http = HTTPTransport(
            url, headers=headers, token=token, ssl=ssl, max_message_size=max_message_size
        )
        self.target = self._http.target
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.protocol = protocol
        self._on_notification = on_notification
        self.server_info: ServerInfo | None = None
        """The server's ``initialize`` answer, or for 2026-07-28 what ``server/discover`` said."""
        self.protocol_version: str | None = None
        """The revision in use once connected."""
        self.session_id: str | None = None
        """The ``Mcp-Session-Id`` the server gave on ``initialize``, if any."""
        self._meta = request_meta(MODERN_PROTOCOL_VERSION, securemcp_version)
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._renewing = anyio.Lock()
        self._state: Literal["new", "open", "closed"] = "new"
        # Tool name: the arguments its calls repeat as Mcp-Param-* headers (2026-07-28).
        self._param_maps: dict[str, Mapping[Path, str]] = {}

    def __repr__(self) -> str:
        return f"<HTTPClient {self.url} {self._state} {self.protocol_version or ''}>".rstrip()

    @property
    def stateless(self) -> bool:
        """Whether the 2026-07-28 revision is in use (no handshake, no session)."""
        return self.protocol_version == MODERN_PROTOCOL_VERSION

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def max_message_size(self) -> int:
        """The largest answer (or event) accepted, in bytes."""
        return self._http.max_message_size

    @max_message_size.setter
    def max_message_size(self, size: int) -> None:
        self._http.max_message_size = size

    @property
    def speaks_mcp(self) -> bool:
        """Always true: Streamable HTTP is MCP's transport (the WebSocket client's property)."""
        return True

    # Life cycle

    async def connect(self) -> None:
        """Learn the server's revision: ``server/discover``, else the ``initialize`` handshake."""
        if self._state != "new":
            raise LocalProtocolError("connect() was already called on this client")
        self._state = "open"
        try:
            with anyio.fail_after(self.connect_timeout):
                if self.protocol != "legacy" and await self._discover():
                    return
                await self._initialize()
        except TimeoutError as exc:
            await self._http.aclose()
            self._state = "closed"
            raise RequestTimeout(
                f"could not open an MCP session with {self.url} within {self.connect_timeout} s"
            ) from exc
        except BaseException:
            await self._http.aclose()
            self._state = "closed"
            raise

    async def _discover(self) -> bool:
        """Whether the server speaks 2026-07-28 (then it is adopted)."""
        try:
            answer = await self._post(
                self._message(SERVER_DISCOVER, self._modern_params(SERVER_DISCOVER, None)),
                routing_headers(SERVER_DISCOVER, None),
                None,
            )
            result = self._result(answer, tool_call=False)
        except HTTPRejected as exc:
            if self.protocol == "modern" or exc.status_code in (401, 403):
                raise
            logger.debug("server/discover refused with HTTP %d: initialize", exc.status_code)
            return False
        except RPCError as exc:
            # Any JSON-RPC error (method not found, unsupported version) means "initialize".
            if self.protocol == "modern":
                raise
            logger.debug("server/discover failed (%s): initialize", exc)
            return False
        versions = result.get("supportedVersions") if isinstance(result, dict) else None
        if not isinstance(versions, list) or MODERN_PROTOCOL_VERSION not in versions:
            if self.protocol == "modern":
                raise UnsupportedProtocolVersion(str(versions))
            return False
        self.protocol_version = MODERN_PROTOCOL_VERSION
        self.server_info = discover_server_info(result, MODERN_PROTOCOL_VERSION)
        return True

    async def _initialize(self) -> None:
        answer = await self._post(
            self._message("initialize", initialize_params(securemcp_version)), (), None
        )
        info = parse_initialize_result(self._result(answer, tool_call=False))
        self.session_id = answer.header("mcp-session-id")
        self.protocol_version = info.protocol_version
        self.server_info = info
        await self._post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, self._legacy_headers(), None
        )

    async def aclose(self) -> None:
        """End the session: a DELETE of it (if the server gave one), then the connections.

        Bounded by ``close_timeout``; harmless when already closed or never connected.
        """
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        self._http.retire()
        try:
            if self.session_id is not None:
                with anyio.move_on_after(self.close_timeout, shield=True):
                    try:
                        await self._http.send(
                            "DELETE", b"", self._legacy_headers(), self._listener(None)
                        )
                    except (OSError, HTTPRejected, ConnectionClosed, InternalError) as exc:
                        # 405: the server does not let clients end sessions.
                        logger.debug("DELETE of the MCP session failed: %r", exc)
        finally:
            await self._http.aclose()

    # Calls: request, call_tool, invoke_tool and ping are MCPCalls'.

    async def list_tools(self, *, timeout: CallTimeout = ...) -> list[dict[str, Any]]:
        """:meth:`MCPCalls.list_tools`; at 2026-07-28 it also learns which arguments
        later calls repeat as ``Mcp-Param-*`` headers, and leaves out (logging a
        warning) a tool whose ``x-mcp-header`` breaks its rules."""
        tools = await super().list_tools(timeout=timeout)
        return learn_param_headers(tools, self._param_maps) if self.stateless else tools

    def _stateless(self) -> bool:
        return self.stateless

    async def _request(self, method: str, params: Any, limit: float | None) -> Any:
        return await self._call(method, params, limit, None, tool_call=False)

    async def _tool_call(
        self, params: dict[str, Any], limit: float | None, on_progress: ProgressCallback | None
    ) -> Any:
        return await self._call(TOOLS_CALL, params, limit, on_progress, tool_call=True)

    async def _call(
        self,
        method: str,
        params: Any,
        limit: float | None,
        on_progress: ProgressCallback | None,
        *,
        tool_call: bool,
    ) -> Any:
        if self._state != "open":
            raise LocalProtocolError(
                "the client is not connected: use 'async with HTTPClient(...)'"
                if self._state == "new"
                else "the client is closed"
            )
        progress_token: str | None = None
        if on_progress is not None:
            progress_token = f"{CLIENT_NAME}-{next(self._tokens)}"
        if self.stateless:
            params = self._modern_params(method, params)
        if progress_token is not None:
            params = with_meta(params, {"progressToken": progress_token})
        message = self._message(method, params)
        progress = None if on_progress is None else (progress_token, on_progress)
        try:
            with anyio.fail_after(limit):
                answer = await self._post_in_session(message, progress)
        except TimeoutError as exc:
            await self._cancel(message["id"])
            raise RequestTimeout(f"no answer to {method!r} within {limit} s") from exc
        except anyio.get_cancelled_exc_class():
            await self._cancel(message["id"])
            raise
        return self._result(answer, tool_call=tool_call)

    async def _post_in_session(self, message: dict[str, Any], progress: CallProgress) -> Answer:
        """POST a request; a 2025 session the server no longer knows is renewed once.

        The transport's rule: HTTP 404 to a request carrying ``Mcp-Session-Id``
        means the session is over, and the client starts a new one with
        ``initialize`` (the request was not run: it is sent again).
        """
        if self.stateless:
            headers = routing_headers(message["method"], message.get("params"), self._param_maps)
            return await self._post(message, headers, progress)
        used = self.session_id
        answer = await self._post(message, self._legacy_headers(), progress)
        if answer.status != 404 or used is None:
            return answer
        async with self._renewing:
            if self.session_id == used:
                logger.info("the server ended MCP session %s: starting a new one", used)
                self.session_id = None
                await self._initialize()
        return await self._post(message, self._legacy_headers(), progress)

    async def _cancel(self, request_id: int) -> None:
        """The caller stopped waiting: tell a 2025-revision server to stop too.

        A 2026-07-28 client cancels by closing the response stream, done already.
        """
        if self.stateless or self._state != "open":
            return
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "the caller stopped waiting"},
        }
        with anyio.move_on_after(self.close_timeout, shield=True):
            try:
                await self._post(note, self._legacy_headers(), None)
            except (OSError, HTTPRejected, ConnectionClosed, InternalError) as exc:
                logger.debug("could not send notifications/cancelled: %r", exc)

    def _result(self, answer: Answer, *, tool_call: bool) -> Any:
        in_session = self.session_id is not None and not self.stateless
        return answer_result(answer, tool_call=tool_call, in_session=in_session)

    # Messages and headers

    def _message(self, method: str, params: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            message["params"] = params
        return message

    def _modern_params(self, method: str, params: Any) -> Any:
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"params of {method!r} must be an object")
        return with_meta(None if params is None else dict(params), self._meta)

    def _legacy_headers(self) -> Headers:
        return session_headers(self.protocol_version, self.session_id)

    # HTTP

    async def _post(
        self, message: dict[str, Any], headers: Headers, progress: CallProgress
    ) -> Answer:
        return await self._http.post(message, headers, self._listener(progress))

    def _listener(self, progress: CallProgress) -> Listener:
        """Where the notifications of one answer's event stream go."""

        async def listener(method: Any, params: Any) -> None:
            await deliver_notification(method, params, progress, self._on_notification)

        return listener
