"""The client's policy, written once for asyncio and trio.

:class:`ClientSession` drives one :class:`~securemcp.protocol.ClientConnection`
through a :class:`~securemcp.backends._client_io.ClientIO` adapter: it opens
(MCP's opening too) and closes the connection, matches answers to the calls
waiting for them, routes MCP progress to the call that asked for it, queues
notifications and keeps the close bookkeeping. The calls themselves (deadlines,
what an answer means) are its base class's,
:class:`~securemcp.backends._client_calls.SessionCalls`. The adapters only
move bytes and wake tasks.

The adapter feeds :meth:`ClientSession.handle` with the core's events as soon
as the bytes are in, in the same pass (an asyncio ``data_received`` callback,
or trio's reader task): an answer sets its call's waiter right there.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from securemcp import __version__ as securemcp_version
from securemcp.errors import (
    ConnectionClosed,
    HandshakeRejected,
    LocalProtocolError,
    RequestTimeout,
    RPCError,
)
from securemcp.protocol import (
    ClientConnection,
    Connected,
    ConnectionRejected,
    ConnectionState,
    ErrorReceived,
    Event,
    Limits,
    NotificationReceived,
    PongReceived,
    RequestId,
    ResponseReceived,
    Welcome,
)
from securemcp.protocol import ConnectionClosed as ClosedEvent
from securemcp.protocol.mcp import SUBPROTOCOL as MCP_SUBPROTOCOL
from securemcp.protocol.mcp_stateless import (
    MODERN_PROTOCOL_VERSIONS,
    SERVER_DISCOVER,
    UNSUPPORTED_PROTOCOL_VERSION,
)

from ._client_calls import SessionCalls
from ._client_io import INFINITY, ClientIO, Waiter
from ._client_notes import Notification, NotificationHandler, NotificationQueue
from ._client_progress import ProgressRoutes
from ._client_target import Target
from ._keepalive import Keepalive
from .mcp_client import (
    ServerInfo,
    initialize_params,
    newest_modern_version,
    parse_discover_result,
    parse_initialize_result,
    request_meta,
)

__all__ = ["ClientSession", "Opener"]

logger = logging.getLogger("securemcp.client")

_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED

Opener = Callable[["ClientSession", float], Awaitable[ClientIO | None]]
"""``opener(session, deadline)``: the connection's I/O once its bytes flow, ``None`` past
``deadline`` (:meth:`ClientIO.open`, or the test kit's in-memory connection)."""


class ClientSession(SessionCalls):
    """One client connection's state and rules, whatever loop runs it."""

    def __init__(
        self,
        url: str,
        target: Target,
        ssl_context: ssl.SSLContext | None,
        headers: tuple[tuple[str, str], ...],
        subprotocols: tuple[str, ...],
        *,
        mcp: bool,
        limits: Limits | None,
        max_queued_notifications: int,
        on_notification: NotificationHandler | None,
        notes: NotificationQueue | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.target = target
        self.ssl_context = ssl_context
        self._headers = headers
        self._subprotocols = subprotocols
        self._mcp = mcp
        self._on_notification = on_notification
        self.conn = ClientConnection(limits=limits)
        self.io: ClientIO | None = None
        self.connected = False
        self.welcome: Welcome | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.server_info: ServerInfo | None = None
        self.meta: dict[str, Any] | None = None
        """MCP 2026-07-28: the ``_meta`` envelope every request carries (``None``: no envelope)."""
        # A reconnecting client's connections share one queue, which it ends itself.
        self._owns_notes = notes is None
        self.notes = NotificationQueue(max_queued_notifications) if notes is None else notes
        self._waiting: dict[RequestId, Waiter] = {}
        self._progress = ProgressRoutes()
        self._deadlines: dict[Waiter, float] = {}
        self._armed = INFINITY
        self._started = False
        self._opened: Waiter | None = None
        self._closed = anyio.Event()
        self._shut = False
        self._keepalive = Keepalive(ping_interval, ping_timeout)

    @property
    def speaks_mcp(self) -> bool:
        """Whether this connection speaks MCP (asked for, or the ``mcp`` subprotocol chosen)."""
        return self._mcp or self.subprotocol == MCP_SUBPROTOCOL

    @property
    def closed(self) -> bool:
        """Whether the connection is over (or could not be opened)."""
        return self._closed.is_set()

    # Opening and closing

    async def open(self, opener: Opener, connect_timeout: float) -> None:
        """``opener`` (TCP, TLS), then the WebSocket handshake, all within ``connect_timeout``."""
        if self._started:
            raise LocalProtocolError("connect() was already called on this client")
        self._started = True
        # A deadline rather than a cancel scope: on trio the adapter opens the
        # task group that outlives this call, which no scope of ours may enclose.
        deadline = anyio.current_time() + connect_timeout
        try:
            io = await opener(self, deadline)
            if io is None:
                raise self._too_slow(connect_timeout)
            self.io = io
            try:
                if not await self._handshake(io, deadline):
                    raise self._too_slow(connect_timeout)
            except BaseException:
                await self._shutdown(io.time())
                raise
        except BaseException:
            self._end()
            raise
        if self._on_notification is not None:
            handler = self._on_notification
            io.spawn(lambda: self.notes.dispatch(io, handler))
        if self._keepalive.interval is not None:
            io.spawn(lambda: self._keep_alive(io))

    async def _keep_alive(self, io: ClientIO) -> None:
        """Ping the server every interval; drop the connection when a pong is overdue.

        A server that vanished without a FIN (a crashed host, a cut cable, a
        NAT that forgot the connection) would otherwise leave the client
        waiting forever, and a reconnecting client would never reconnect.
        """
        keepalive, conn = self._keepalive, self.conn
        keepalive.start(io.time())
        while conn.state is _OPEN:
            await anyio.sleep_until(keepalive.next_tick())
            verdict = keepalive.tick(io.time(), reading=conn.wants_read)
            if verdict == "ping" and conn.state is _OPEN:
                conn.ping(keepalive.payload)
                io.write()
            elif verdict == "timeout":
                logger.warning(
                    "no pong from %s within %s s: dropping the connection",
                    self.url,
                    keepalive.timeout,
                )
                io.abort()
                return

    def _too_slow(self, connect_timeout: float) -> RequestTimeout:
        return RequestTimeout(f"could not connect to {self.url} within {connect_timeout} s")

    async def _handshake(self, io: ClientIO, deadline: float) -> bool:
        self.conn.connect(
            self.target.host_header,
            self.target.resource,
            subprotocols=self._subprotocols,
            extra_headers=self._headers,
        )
        self._opened = opened = io.waiter()
        io.write()
        with anyio.move_on_at(deadline):
            failure = await io.wait(opened)
            if failure is not None:
                raise failure
            return True
        return False

    async def negotiate(self, limit: float) -> None:
        """MCP's opening: the newest revision the server speaks, within ``limit`` seconds.

        ``server/discover`` first, as a 2026-07-28 request (the spec's probe,
        basic/versioning "Backward Compatibility"): a discover result makes every
        later request carry the ``_meta`` envelope; -32022 naming another
        stateless revision we speak retries once with it; any other error, a
        result that is no discover result, or no answer within half of ``limit``
        means a legacy server, so :meth:`initialize` with the time left.
        """
        io = self.io
        assert io is not None
        self.conn.jsonrpc = True
        deadline = io.time() + limit
        version = MODERN_PROTOCOL_VERSIONS[-1]
        for _ in range(2):
            meta = request_meta(version, securemcp_version)
            try:
                result = await self.call(
                    SERVER_DISCOVER, {"_meta": meta}, limit / 2, tool_call=False
                )
            except RequestTimeout:
                break
            except RPCError as exc:
                if exc.code == UNSUPPORTED_PROTOCOL_VERSION and isinstance(exc.data, dict):
                    other = newest_modern_version(exc.data.get("supported"))
                    if other is not None and other != version:
                        version = other
                        continue
                break
            info = parse_discover_result(result, version)
            if info is None:
                break
            self.server_info = info
            self.meta = meta
            return
        await self.initialize(max(deadline - io.time(), 0.0))

    async def initialize(self, limit: float) -> None:
        """MCP's opening: ``initialize``, check the revision, ``notifications/initialized``."""
        conn = self.conn
        conn.jsonrpc = True
        result = await self.call(
            "initialize", initialize_params(securemcp_version), limit, tool_call=False
        )
        self.server_info = parse_initialize_result(result)
        if conn.state is _OPEN:
            conn.notify("notifications/initialized")
            assert self.io is not None
            self.io.write()

    async def aclose(self, code: int, reason: str, close_timeout: float) -> None:
        """The closing handshake, bounded by ``close_timeout``, then the socket's end."""
        io = self.io
        if io is None or self._shut:
            return
        deadline = io.time() + close_timeout
        conn = self.conn
        # Shielded: closing must finish even when the caller is being cancelled
        # (an `async with` body that timed out), and it is bounded by the deadline.
        with anyio.move_on_at(deadline, shield=True):
            if conn.state is _OPEN:
                conn.close(code, reason)
                io.write()
            await self._closed.wait()
        await self._shutdown(deadline)

    async def _shutdown(self, deadline: float) -> None:
        self._shut = True
        assert self.io is not None
        await self.io.shutdown(deadline)

    async def wait_closed(self) -> None:
        """Return once the connection is over."""
        await self._closed.wait()

    # Events, as soon as the adapter has fed the core

    def lost(self) -> None:
        """The socket is gone (or given up on): the core closes as a lost connection."""
        conn = self.conn
        if conn.state is not _CLOSED:
            conn.receive_eof()
            self.handle(conn.events_received())

    def handle(self, events: list[Event]) -> None:
        """Act on the core's events: wake calls, queue notifications, note the close."""
        for event in events:
            if isinstance(event, (ResponseReceived, ErrorReceived)):
                waiter = self._waiting.pop(event.id, None)
                # A cancelled asyncio waiter is done already.
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)
            elif isinstance(event, PongReceived):
                self._keepalive.pong(event.payload)
            elif isinstance(event, NotificationReceived):
                if event.method == "notifications/progress" and self._progress.route(event.params):
                    continue
                self.notes.put(Notification(event.method, event.params))
            elif isinstance(event, Welcome):
                self.welcome = event
            elif isinstance(event, Connected):
                self.subprotocol = event.subprotocol
                self.connected = True
                self._opening_ends(None)
            elif isinstance(event, ConnectionRejected):
                self._opening_ends(HandshakeRejected(event.status_code, event.body, event.headers))
            elif isinstance(event, ClosedEvent):
                if self.connected:
                    self._on_closed(event)
                else:
                    self._opening_ends(
                        ConnectionClosed(event.code, "connection lost during the handshake")
                    )

    def _opening_ends(self, failure: BaseException | None) -> None:
        opened = self._opened
        if opened is not None and not opened.done():
            opened.set_result(failure)
        if failure is not None:
            self._end()

    def _on_closed(self, event: ClosedEvent) -> None:
        self.close_code, self.close_reason = event.code, event.reason
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_result(event)
        self._end()

    def _end(self) -> None:
        if self._owns_notes:
            self.notes.end()
        self._closed.set()
