"""The WebSocket client: :class:`WebSocketClient`, on asyncio (and uvloop) or trio.

One public class, two thin adapters under one policy. The policy (calls and
their answers, errors, progress, notifications, opening and closing) is
:class:`~securemcp.backends._client_session.ClientSession`, written once. It
runs on an :class:`asyncio.Protocol` on asyncio, where ``data_received``
answers the waiting calls in the same pass, and on one lean reader task on
trio; the client picks the adapter by the async library it runs under.
Callers put their requests into the core and wait for their own answer, so a
caller that times out or is cancelled cannot cut a frame in half.

Errors, at the edge:

- the TCP connection cannot be made: the :class:`OSError` the system gave
  (``ConnectionRefusedError``, ``socket.gaierror``, ``ssl.SSLCertVerificationError``),
  as users of sockets expect;
- the server refuses the upgrade: :class:`~securemcp.errors.HandshakeRejected`;
- no connection within ``connect_timeout``, no answer within a call's timeout:
  :class:`~securemcp.errors.RequestTimeout` (also a :class:`TimeoutError`);
- an error answer: the :class:`~securemcp.errors.RPCError` subclass for its code;
- the connection is over: :class:`~securemcp.errors.ConnectionClosed`, raised at
  once in every call still waiting.

No exception group ever leaves a public method.
"""

from __future__ import annotations

import functools
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from typing import Any

from securemcp.errors import InternalError, LocalProtocolError
from securemcp.protocol import CloseCode, Limits, Welcome
from securemcp.protocol.mcp import SUBPROTOCOL as MCP_SUBPROTOCOL
from securemcp.protocol.mcp import TOOLS_CALL

from ._backoff import Backoff
from ._client_io import ClientIO, io_class
from ._client_notes import (
    Notification,
    NotificationHandler,
    NotificationIterator,
    NotificationQueue,
)
from ._client_session import ClientSession
from ._client_target import header_pairs, parse_url, tls_context, with_token
from ._keepalive import check_seconds
from ._mcp_calls import CallTimeout, MCPCalls
from ._reconnect import ReconnectHook, Reconnector
from .mcp_client import ProgressCallback, ServerInfo

__all__ = ["Backoff", "Notification", "ReconnectHook", "WebSocketClient"]


class WebSocketClient(MCPCalls):
    """A SecureMCP client over one WebSocket connection (``ws://`` or ``wss://``).

    Use it as an async context manager, on asyncio or trio::

        async with WebSocketClient("ws://localhost:8765") as client:
            tools = await client.list_tools()
            result = await client.invoke_tool("echo", {"message": "hi"})

    Any number of calls may be in flight at once; each gets its own answer.

    :param url: ``ws://host[:port]/path?query`` or ``wss://...`` (ports 80/443 by default).
    :param headers: extra handshake headers, e.g. ``{"Authorization": "Bearer ..."}``.
    :param subprotocols: subprotocols to offer; the chosen one is :attr:`subprotocol`.
    :param ssl: for ``wss://``, an :class:`ssl.SSLContext`, or ``None``/``True`` for
        :func:`ssl.create_default_context`.
    :param timeout: default per-call timeout in seconds (``None``: wait forever).
    :param connect_timeout: bound on TCP connect, TLS and WebSocket handshake together.
    :param close_timeout: how long closing waits for the server's close frame.
    :param ping_interval: seconds between the client's WebSocket pings (``None``: none).
    :param ping_timeout: seconds a pong may take; past them the connection is
        dropped as lost (calls in flight raise
        :class:`~securemcp.errors.ConnectionClosed`, a reconnecting client
        reconnects), since a server gone without a word would otherwise leave
        the client waiting for ever. ``None``: never dropped for it.
    :param on_notification: ``handler(method, params)`` for server notifications,
        called one at a time in a task of the client (an awaitable it returns is
        awaited, and it may make calls); its exceptions are logged. Without it,
        read notifications with :meth:`notifications`.
    :param max_queued_notifications: notifications buffered for a consumer that
        lags; past that the *oldest* is dropped (counted in
        :attr:`dropped_notifications`, logged), so a chatty server cannot grow
        memory or stall the answers behind it.
    :param limits: the core's :class:`~securemcp.protocol.Limits` (message size, depth).
    :param token: a bearer token, sent as ``Authorization: Bearer <token>`` (never in the URL).
    :param token_in_subprotocol: send ``token`` as the subprotocol entry
        ``bearer.<token>`` instead, as a browser must (its WebSocket API cannot set
        headers); the server never echoes it back. Such a token must be
        base64url without padding (letters, digits, ``-._~+``).
    :param mcp: speak MCP (see ``docs/mcp.md``): offer the ``mcp`` subprotocol and
        negotiate the newest revision on connecting: ``server/discover`` (revision
        2026-07-28, every request then carries the ``_meta`` envelope), falling
        back to the ``initialize`` handshake on a server that does not know it.
        The client also speaks MCP whenever the server chooses ``mcp`` from
        ``subprotocols``.
    :param reconnect: ``True`` (default :class:`Backoff`) or a :class:`Backoff`:
        when the connection drops for any reason but :meth:`aclose` or the
        server's normal (1000) close, connect again in the background, waiting
        the backoff's delays; see :attr:`reconnects`. Calls in flight at the drop
        raise :class:`~securemcp.errors.ConnectionClosed`; calls made meanwhile
        wait for the new connection within their timeout. The first
        :meth:`connect` is not retried. A refused handshake that waiting will not
        cure (401, 403, 404: any 4xx but 408 and 429), or the backoff's limits,
        end the client for good: waiting calls then raise ``ConnectionClosed``,
        caused by :attr:`reconnect_error`.
    :param on_reconnect: ``hook(client)``, called after each reconnection (and the
        MCP negotiation) before waiting calls go on, to restore what the
        server forgot: rejoin rooms, subscribe again. An awaitable it returns is
        awaited; its calls use the new connection; its exceptions are logged
        and the connection is kept.
    :param retry_idempotent: resend, once, on the next connection, a tool call
        in flight at a drop when the server's tool list annotates its tool
        ``idempotentHint: true`` or ``readOnlyHint: true`` (the list is fetched
        on each connection); any other call is never resent.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
        ssl: ssl_module.SSLContext | bool | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        on_notification: NotificationHandler | None = None,
        max_queued_notifications: int = 256,
        limits: Limits | None = None,
        token: str | None = None,
        token_in_subprotocol: bool = False,
        mcp: bool = False,
        reconnect: bool | Backoff = False,
        on_reconnect: ReconnectHook | None = None,
        retry_idempotent: bool = False,
    ) -> None:
        if isinstance(subprotocols, str):
            raise TypeError("subprotocols must be a sequence of strings, not a string")
        if max_queued_notifications < 1:
            raise ValueError("max_queued_notifications must be at least 1")
        check_seconds("ping_interval", ping_interval)
        check_seconds("ping_timeout", ping_timeout)
        self.url = url
        target = parse_url(url)
        ssl_context = tls_context(target, ssl)
        extra_headers = header_pairs(headers)
        offered = tuple(subprotocols)
        if token is not None:
            extra_headers, offered = with_token(token, token_in_subprotocol, extra_headers, offered)
        elif token_in_subprotocol:
            raise ValueError("token_in_subprotocol needs a token")
        if mcp and MCP_SUBPROTOCOL not in offered:
            offered = (MCP_SUBPROTOCOL, *offered)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self._on_notification = on_notification
        new_session = functools.partial(
            ClientSession,
            url,
            target,
            ssl_context,
            extra_headers,
            offered,
            mcp=mcp,
            limits=limits,
            max_queued_notifications=max_queued_notifications,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self._reconnector: Reconnector | None = None
        if reconnect is False:
            if on_reconnect is not None or retry_idempotent:
                raise ValueError("on_reconnect and retry_idempotent need reconnect")
            self._session = new_session(on_notification=on_notification)
        else:
            backoff = Backoff() if reconnect is True else reconnect
            if not isinstance(backoff, Backoff):
                raise TypeError("reconnect must be a bool or a Backoff")
            # One queue for every connection: one iterator or handler for the client's life.
            notes = NotificationQueue(max_queued_notifications)
            self._session = new_session(on_notification=on_notification, notes=notes)
            self._reconnector = Reconnector(
                self,
                functools.partial(new_session, on_notification=None, notes=notes),
                backoff,
                on_reconnect,
                retry_idempotent,
            )

    def __repr__(self) -> str:
        session = self._session
        state = session.conn.state.value if session.io is not None else "unconnected"
        return f"<{type(self).__name__} {self.url} {state}>"

    # What the connection says about itself

    @property
    def welcome(self) -> Welcome | None:
        """The server's greeting (seed dialect), once it has arrived."""
        return self._session.welcome

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""
        return self._session.subprotocol

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code once the connection is over, else ``None``."""
        return self._session.close_code

    @property
    def close_reason(self) -> str:
        """The close reason once the connection is over."""
        return self._session.close_reason

    @property
    def dropped_notifications(self) -> int:
        """How many notifications were dropped because the consumer lagged."""
        return self._session.notes.dropped

    @property
    def server_info(self) -> ServerInfo | None:
        """MCP: the server's ``server/discover`` or ``initialize`` answer (revision, name ...)."""
        return self._session.server_info

    @property
    def speaks_mcp(self) -> bool:
        """Whether this connection speaks MCP (asked for, or the ``mcp`` subprotocol chosen)."""
        return self._session.speaks_mcp

    @property
    def closed(self) -> bool:
        """Whether the connection is over (true as well after a failed connect).

        A reconnecting client is closed once it will not reconnect any more.
        """
        if self._reconnector is not None:
            return self._reconnector.closed
        return self._session.closed

    @property
    def reconnects(self) -> int:
        """How many times a reconnecting client has reconnected (hook included)."""
        return 0 if self._reconnector is None else self._reconnector.reconnects

    @property
    def reconnect_error(self) -> BaseException | None:
        """Why a reconnecting client gave up, when an error made it: the last attempt's
        (e.g. :class:`~securemcp.errors.HandshakeRejected`), else ``None``."""
        return None if self._reconnector is None else self._reconnector.error

    @property
    def pending_count(self) -> int:
        """How many calls are waiting for an answer (the core's pending table)."""
        return len(self._session.conn.pending)

    # Life cycle

    async def connect(self) -> None:
        """Open the connection: TCP, TLS for ``wss://``, then the WebSocket handshake.

        Prefer ``async with``; if you call this, call :meth:`aclose` from the same
        task, because (on trio) the client's task group spans the time in between.
        """
        session = self._session
        await session.open(self._open_io, self.connect_timeout)
        reconnector = self._reconnector
        if session.speaks_mcp or reconnector is not None:
            try:
                if session.speaks_mcp:
                    await session.negotiate(self.connect_timeout)
                if reconnector is not None:
                    await reconnector.start(session)
            except BaseException:
                await self.aclose()
                raise

    async def _open_io(self, session: ClientSession, deadline: float) -> ClientIO | None:
        """Connect ``session`` to the server (TCP, TLS) on this task's async library."""
        return await io_class().open(session, deadline)

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection with ``code`` and wait (up to ``close_timeout``) for the server.

        Calls still waiting raise :class:`~securemcp.errors.ConnectionClosed`.
        Harmless when the client is already closed or was never connected.
        A reconnecting client stops reconnecting.
        """
        if self._reconnector is not None:
            await self._reconnector.aclose(code, reason, self.close_timeout)
        else:
            await self._session.aclose(code, reason, self.close_timeout)

    async def wait_closed(self) -> None:
        """Return once the connection is over (:attr:`close_code` is then set).

        For a reconnecting client: once it will not reconnect any more.
        """
        if self._reconnector is not None:
            await self._reconnector.wait_closed()
        else:
            await self._session.wait_closed()

    async def wait_reconnected(self, count: int = 1) -> None:
        """Return once a reconnecting client has reconnected ``count`` times in all,
        its ``on_reconnect`` hook done; raise :class:`~securemcp.errors.ConnectionClosed`
        if it closes for good first."""
        if self._reconnector is None:
            raise LocalProtocolError("wait_reconnected needs WebSocketClient(reconnect=...)")
        await self._reconnector.wait_reconnected(count)

    # Calls: request, call_tool and ping are MCPCalls'; the seed dialect differs here.

    async def invoke_tool(
        self, name: str, params: Mapping[str, Any] | None = None, *, timeout: CallTimeout = ...
    ) -> Any:
        """Call tool ``name`` with ``params`` and return what it returned.

        An unknown tool raises :class:`~securemcp.errors.ToolNotFound`, bad
        arguments :class:`~securemcp.errors.InvalidParams` (``data`` says
        which), a failing tool :class:`~securemcp.errors.ToolError`.

        Over MCP this is :meth:`call_tool` then :meth:`ToolResult.value`: an
        unknown tool raises :class:`~securemcp.errors.InvalidParams`, and bad
        arguments, like a failing tool, :class:`~securemcp.errors.ToolError`.
        """
        if self.speaks_mcp:
            return await super().invoke_tool(name, params, timeout=timeout)
        payload = {"tool_name": name, "params": dict(params) if params is not None else {}}
        return await self._call("invoke_tool", payload, self._limit(timeout), True, tool=name)

    async def list_tools(self, *, timeout: CallTimeout = ...) -> list[dict[str, Any]]:
        """The server's tools: one dict each (``name``, ``description``, ``inputSchema``, ...).

        Over MCP, every page of ``tools/list``, in the server's order.
        """
        if self.speaks_mcp:
            return await super().list_tools(timeout=timeout)
        result = await self._call("list_tools", None, self._limit(timeout), False)
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            raise InternalError("malformed list_tools answer: no 'tools' list")
        return tools

    def notifications(self) -> AsyncIterator[Notification]:
        """Iterate over the server's notifications as ``(method, params)`` pairs.

        The iteration ends once the connection is over and the buffered
        notifications are consumed. A consumer that lags loses the oldest ones
        (see ``max_queued_notifications``). Not available with ``on_notification``.
        """
        if self._on_notification is not None:
            raise LocalProtocolError("notifications go to on_notification on this client")
        io = self._session.io
        if io is None:
            raise LocalProtocolError("the client is not connected")
        return NotificationIterator(self._session.notes, io)

    def _call(
        self,
        method: str,
        params: Any,
        limit: float | None,
        tool_call: bool,
        on_progress: ProgressCallback | None = None,
        tool: str | None = None,
    ) -> Awaitable[Any]:
        """The current connection's call, or the reconnecting one's (no extra await either way)."""
        reconnector = self._reconnector
        if reconnector is None:
            return self._session.call(
                method, params, limit, tool_call=tool_call, on_progress=on_progress
            )
        return reconnector.call(
            method, params, limit, tool_call=tool_call, on_progress=on_progress, tool=tool
        )

    async def _request(self, method: str, params: Any, limit: float | None) -> Any:
        return await self._call(method, params, limit, False)

    async def _tool_call(
        self, params: dict[str, Any], limit: float | None, on_progress: ProgressCallback | None
    ) -> Any:
        return await self._call(TOOLS_CALL, params, limit, True, on_progress, params.get("name"))

    def _stateless(self) -> bool:
        return self._session.meta is not None
