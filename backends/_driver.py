"""The policy of one server connection, written once for every I/O path.

A :class:`ConnectionDriver` owns a connection's
:class:`~securemcp.protocol.ServerConnection` and decides everything that is not
I/O: admission (connection caps, the security policy, 503 when full or
draining), keepalive pings and pong deadlines, the handshake, close and
credential-expiry deadlines, the tool calls, and when the connection closes. It
reads no socket and runs no task: an *adapter* (:class:`Adapter`: the asyncio
protocol in ``_asyncio_server.py``, the anyio stream task in
``_anyio_server.py``) feeds it bytes, takes its output, arms the one timer it
asks for and runs the tool calls that suspend.

The handshake's decision is in ``_handshake.py``: at once, or in a task when a
connection cap is shared (Redis). The tool calls (rate limits, calls answered
in the same pass as their bytes or run in a task, cancellation) are in
``_driver_calls.py``, the driver's base class.
"""

from __future__ import annotations

import logging
import math
import time

from securemcp.protocol import (
    CallCancelled,
    CloseCode,
    ConnectionClosed,
    ConnectionState,
    HandshakeRequest,
    HTTPAborted,
    HTTPRequest,
    HTTPRequestReceived,
    PongReceived,
    ServerConnection,
    ToolCall,
)

from ._driver_calls import DriverCalls
from ._handshake import decide, release_slots
from ._http_serve import HTTPEndpoint
from ._keepalive import Keepalive
from ._pubsub import ConnectionSession
from ._security import Admission, rate_key, security_logger
from ._settings import Adapter, ServerState, answer_http

__all__ = ["ConnectionDriver"]

logger = logging.getLogger("securemcp")

_DAY = 86400.0
"""The longest wait armed at once: an infinite expiry must not overflow a timer."""


class ConnectionDriver(DriverCalls):
    """Serve one accepted connection: every decision, no I/O."""

    __slots__ = (
        "_admission",
        "_closing",
        "_deadline",
        "_expires_at",
        "_going_away",
        "_http",
        "_keepalive",
        "_pending",
        "_refuse",
        "_session",
        "_timer_at",
        "adapter",
        "address",
        "conn",
        "peer",
        "server",
        "settings",
    )

    def __init__(
        self, server: ServerState, adapter: Adapter, peer: object, *, refuse: bool = False
    ) -> None:
        settings = server.settings
        self.server = server
        self.settings = settings
        self.adapter = adapter
        self.conn = ServerConnection(
            settings.app,
            limits=settings.limits,
            mask_errors=settings.guard.policy.mask_errors,
            http=settings.http_handler is not None,
            # Plain requests (MCP Streamable HTTP) when an MCP path is served.
            http_methods=None if settings.mcp_path is None else ("GET", "POST", "DELETE"),
        )
        self.peer = "?" if peer is None else str(peer)
        # The connection caps count client IP addresses, whatever the port.
        self.address: str | None = peer[0] if isinstance(peer, tuple) else None
        self._refuse = refuse
        self._admission: Admission | None = None
        # Admitted but awaiting the shared caps (see _handshake.py).
        self._pending: Admission | None = None
        self._calls = {}
        self._deadline = math.inf
        self._timer_at = math.inf  # when the adapter's timer fires (see _arm)
        self._expires_at: float | None = None
        # Advanced by the server's ticker (keepalive_tick).
        self._keepalive = Keepalive(settings.ping_interval, settings.ping_timeout)
        self._closing = False
        self._going_away = False
        self._session: ConnectionSession | None = None
        # Created by the first plain HTTP request (see _http_serve.py).
        self._http: HTTPEndpoint | None = None

    # Life

    def start(self) -> None:
        """The socket is up: the handshake deadline runs from now."""
        logger.debug("connection from %s", self.peer)
        timeout = self.settings.handshake_timeout
        if timeout is not None:
            self._arm(self.adapter.now() + timeout)

    @property
    def finished(self) -> bool:
        """Whether the connection is over: write what is left, then close the socket."""
        return self.conn.state is ConnectionState.CLOSED

    @property
    def wants_read(self) -> bool:
        """Whether the adapter should read from the socket now (the core's backpressure)."""
        return self.conn.wants_read

    def data_received(self, data: bytes) -> None:
        """Bytes from the socket."""
        self.conn.receive_data(data)
        if self.conn.has_events:
            self._handle_events()

    def eof_received(self) -> None:
        """The peer closed its side, or the socket failed."""
        self.conn.receive_eof()
        self._handle_events()

    def take_output(self) -> list[bytes]:
        """The chunks to write now, in order (none: nothing); draining may let held input in."""
        chunks = self.conn.data_to_send_chunks()
        if self.conn.has_events or (self.conn.close_expected() and not self._closing):
            self._handle_events()
        return chunks

    def pending_output(self) -> int:
        """Bytes the peer has yet to receive: the core's and the socket layer's."""
        return self.conn.pending_output + self.adapter.buffered()

    def connection_lost(self) -> None:
        """The socket is closed: stop every call, leave every topic, give back the slots."""
        if self.conn.state is not ConnectionState.CLOSED:
            self.conn.receive_eof()
        self._handle_events()
        self._cancel_calls("Connection closed")
        if self._http is not None:
            self._http.aborted()
            limiter = self.settings.guard.policy.rate_limiter
            if limiter is not None and self.address is None:
                # Anonymous requests were keyed by this connection (no address to
                # share): nobody can use that bucket again. An address's outlives it.
                limiter.forget(rate_key(None, self))
        if self._session is not None:
            self._session.close()
        # A decision still pending gives its slots back itself when it comes.
        self._pending = None
        admission, self._admission = self._admission, None
        if admission is not None:
            release_slots(self, admission)
        self._arm(math.inf)
        logger.debug("connection from %s closed", self.peer)

    def go_away(self) -> None:
        """The server is stopping: cancel what runs, then close with 1001 (or just abort).

        Calls still running are answered with -32800 before the close frame
        (over HTTP: as the answer, then the connection closes).
        """
        if self._going_away:
            return
        self._going_away = True
        http = self.conn.http
        if self._http is not None and http is not None and not http.closed:
            self._http.go_away()
            self._handle_events()
            self.adapter.wake()
            return
        if self.conn.state is not ConnectionState.OPEN:
            if not self._closing:
                # Mid-handshake: there is nobody to say goodbye to yet.
                self._pending = None
                self.adapter.abort()
            return
        self._cancel_calls("Server shutting down")
        self.conn.close(CloseCode.GOING_AWAY, "server shutting down")
        self._handle_events()
        self.adapter.wake()

    # Timers

    def _arm(self, when: float, *, lazy: bool = False) -> None:
        """Set the deadline; ``lazy``: leave an earlier timer be, it sets itself again when due.

        Lazy is for keep-alive HTTP, whose deadline moves with every request:
        moving the adapter's timer each time cost a loop timer per request on
        asyncio, where letting it fire and re-arm costs one per timeout.
        """
        if when == self._deadline:
            return
        self._deadline = when
        if lazy and when > self._timer_at:
            return
        self._timer_at = when
        self.adapter.set_deadline(when)

    def on_deadline(self) -> None:
        """The deadline asked for has come: time out the handshake or the close, or expire."""
        timer_at, self._timer_at = self._timer_at, math.inf
        if self._deadline > timer_at:  # moved later (lazily) since the timer was set
            if self._deadline != math.inf:
                self._timer_at = self._deadline
                self.adapter.set_deadline(self._deadline)
            return
        self._deadline = math.inf
        if self.conn.state is ConnectionState.CONNECTING:
            logger.debug("handshake timeout on the connection from %s", self.peer)
            self._pending = None
            self.adapter.abort()
        elif self._closing or self.conn.state is not ConnectionState.OPEN:
            logger.debug("close timeout on the connection from %s", self.peer)
            self.adapter.abort()
        elif self._expires_at is not None:
            self._check_expiry()

    def _check_expiry(self) -> None:
        assert self._expires_at is not None
        # Expiry is wall-clock time, timers run on the loop's clock: check the
        # wall clock on waking, in case it was set back meanwhile.
        remaining = self._expires_at - time.time()
        if remaining > 0:  # a NaN expiry counts as expired: fail closed
            self._arm(self.adapter.now() + min(remaining, _DAY))
            return
        principal = self.conn.principal
        security_logger.info(
            "credentials of %s expired: closing the connection from %s with 1008",
            "?" if principal is None else principal.subject,
            self.peer,
        )
        # Closing cancels the calls still running (see _start_closing).
        self.conn.close(CloseCode.POLICY_VIOLATION, "token expired")
        self._handle_events()
        self.adapter.wake()

    def keepalive_tick(self, now: float) -> None:
        """Ping the peer when a ping is due; close with 1011 if its pong is overdue.

        Called by the server's ticker for every connection a few times per interval.
        """
        conn = self.conn
        if conn.state is not ConnectionState.OPEN:
            return
        verdict = self._keepalive.tick(now, reading=self.adapter.reading())
        if verdict == "timeout":
            logger.debug("keepalive timeout on the connection from %s", self.peer)
            conn.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._handle_events()
        elif verdict == "ping":
            conn.ping(self._keepalive.payload)
        else:
            return
        self.adapter.wake()

    # Events

    def _handle_events(self) -> None:
        """Act on everything the core reported; call after every call into the core."""
        conn = self.conn
        while True:
            events = conn.events_received()
            if not events:
                if conn.close_expected() and not self._closing:
                    self._start_closing()
                    continue
                return
            for event in events:
                kind = type(event)
                if kind is ToolCall:
                    self._start_call(event)  # type: ignore[arg-type]
                elif kind is PongReceived:
                    self._keepalive.pong(event.payload)  # type: ignore[attr-defined]
                elif kind is CallCancelled:
                    self._cancel_call(event.call)  # type: ignore[attr-defined]
                elif kind is HandshakeRequest:
                    decide(self, event)  # type: ignore[arg-type]
                elif kind is HTTPRequestReceived:
                    if self._http is None:
                        self._http = HTTPEndpoint(self)
                    self._http.on_request(event)  # type: ignore[arg-type]
                elif kind is HTTPAborted:
                    if self._http is not None:  # pragma: no branch - only after a request
                        self._http.aborted()
                elif kind is HTTPRequest:
                    status, headers, body = answer_http(self.settings, event)  # type: ignore[arg-type]
                    self.conn.respond(status, body, headers)
                elif kind is ConnectionClosed:
                    logger.debug(
                        "connection from %s closed with code %d %s",
                        self.peer,
                        event.code,  # type: ignore[attr-defined]
                        event.reason,  # type: ignore[attr-defined]
                    )
                    self._cancel_calls("Connection closed")

    def _start_closing(self) -> None:
        # Answers can no longer be sent: stop the work, free the core's slots,
        # and give the peer close_timeout seconds to finish the handshake.
        self._closing = True
        self._cancel_calls("Connection closing")
        timeout = self.settings.close_timeout
        if self.conn.state is not ConnectionState.CLOSED and timeout is not None:
            self._arm(min(self._deadline, self.adapter.now() + timeout))
