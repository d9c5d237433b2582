"""The policy of one server connection, written once for every I/O path.

A :class:`ConnectionDriver` owns a connection's
:class:`~securemcp.protocol.ServerConnection` and decides everything that is not
I/O: admission (connection caps, the security policy, 503 when full or
draining), rate limits, the bookkeeping of tool calls and their cancellation,
keepalive pings and pong deadlines, the handshake, close and credential-expiry
deadlines, and when the connection closes. It reads no socket and runs no task:
an *adapter* (:class:`Adapter`: the asyncio protocol in ``_asyncio_server.py``,
the anyio stream task in ``_anyio_server.py``) feeds it bytes, takes its output,
arms the one timer it asks for and runs the tool calls that suspend.

Tool calls whose coroutine cannot suspend (``Tool.runs_inline``) are answered
right here, in the same pass as the bytes that asked for them.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from securemcp.app import SecureMCP
from securemcp.errors import Cancelled, RateLimited, RPCError
from securemcp.protocol import (
    CallCancelled,
    CloseCode,
    ConnectionClosed,
    ConnectionState,
    HandshakeRequest,
    HTTPRequest,
    Limits,
    PongReceived,
    RequestId,
    ServerConnection,
    ToolCall,
)
from securemcp.protocol.mcp import SUBPROTOCOL as MCP_SUBPROTOCOL
from securemcp.pubsub import Broker
from securemcp.security import HandshakeRefused, SecurityPolicy

from ._pubsub import ConnectionSession, LoopThread
from ._security import Admission, ConnectionGuard, security_logger

__all__ = ["Adapter", "ConnectionDriver", "HTTPHandler", "ServerSettings", "ServerState"]

logger = logging.getLogger("securemcp")

HTTPHandler = Callable[[HTTPRequest], "tuple[int, list[tuple[str, str]], bytes] | None"]
"""``handler(request) -> (status, headers, body)``, or ``None`` for 404 Not Found."""

_DAY = 86400.0
"""The longest wait armed at once: an infinite expiry must not overflow a timer."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything a connection needs to know about the server it belongs to."""

    app: SecureMCP
    limits: Limits | None
    handshake_timeout: float | None
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float | None
    ssl: ssl.SSLContext | None
    guard: ConnectionGuard = field(default_factory=lambda: ConnectionGuard(SecurityPolicy()))
    """The security policy, with the connection caps it keeps for this server."""
    subprotocols: tuple[str, ...] = ()
    """The subprotocols this server speaks, in order of preference."""
    broker: Broker | None = None
    """Where tools publish and connections subscribe (``None``: no broadcast)."""
    http_handler: HTTPHandler | None = None
    """Answers plain HTTP GETs (see ``WebSocketTransport``); ``None``: HTTP 400."""


class ServerState(Protocol):
    """What the connections of one running server share."""

    settings: ServerSettings
    draining: bool
    """Stopping: new handshakes get 503, new calls -32800."""
    loop: LoopThread
    """The event loop's thread, for tools that report from worker threads."""

    def call_finished(self) -> None:
        """A call ended (the draining server waits for the last one)."""


class Adapter(Protocol):
    """What the I/O around a driver does for it."""

    def now(self) -> float:
        """The event loop's clock, in seconds."""

    def wake(self) -> None:
        """Output is waiting that no adapter call produced (timer, broadcast): write it soon."""

    def spawn(self, call: ToolCall) -> Callable[[], object]:
        """Run ``call`` (which may suspend) and report to :meth:`ConnectionDriver.call_done`.

        Returns the function that cancels it.
        """

    def set_deadline(self, when: float) -> None:
        """Call :meth:`ConnectionDriver.on_deadline` at ``when`` (loop clock; ``inf``: never)."""

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""

    def buffered(self) -> int:
        """Bytes handed to the socket layer and not yet sent."""

    def reading(self) -> bool:
        """Whether bytes the peer sends are being read (not paused by backpressure)."""


class ConnectionDriver:
    """Serve one accepted connection: every decision, no I/O."""

    __slots__ = (
        "_admission",
        "_calls",
        "_closing",
        "_deadline",
        "_expires_at",
        "_going_away",
        "_next_ping",
        "_pong_deadline",
        "_pong_payload",
        "_refuse",
        "_session",
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
        )
        self.peer = "?" if peer is None else str(peer)
        # The connection caps count client IP addresses, whatever the port.
        self.address: str | None = peer[0] if isinstance(peer, tuple) else None
        self._refuse = refuse
        self._admission: Admission | None = None
        # Keyed by request id (unique among calls in flight, the core sees to that).
        self._calls: dict[RequestId, tuple[ToolCall, Callable[[], object]]] = {}
        self._deadline = math.inf
        self._expires_at: float | None = None
        # Keepalive state, advanced by the server's ticker (keepalive_tick).
        self._next_ping = math.inf
        self._pong_deadline: float | None = None
        self._pong_payload = b""
        self._closing = False
        self._going_away = False
        self._session: ConnectionSession | None = None

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

    @property
    def calls_in_flight(self) -> int:
        """Tool calls started and not yet answered."""
        return len(self._calls)

    def data_received(self, data: bytes) -> None:
        """Bytes from the socket."""
        self.conn.receive_data(data)
        if self.conn._events:
            self._handle_events()

    def eof_received(self) -> None:
        """The peer closed its side, or the socket failed."""
        self.conn.receive_eof()
        self._handle_events()

    def take_output(self) -> bytes:
        """What to write now (empty: nothing); draining it may let held input through."""
        data = self.conn.data_to_send()
        if self.conn._events or (self.conn.close_expected() and not self._closing):
            self._handle_events()
        return data

    def pending_output(self) -> int:
        """Bytes the peer has yet to receive: the core's and the socket layer's."""
        return self.conn.pending_output + self.adapter.buffered()

    def connection_lost(self) -> None:
        """The socket is closed: stop every call, leave every topic, give back the slots."""
        if self.conn.state is not ConnectionState.CLOSED:
            self.conn.receive_eof()
        self._handle_events()
        self._cancel_calls("Connection closed")
        if self._session is not None:
            self._session.close()
        self._release()
        self._arm(math.inf)
        logger.debug("connection from %s closed", self.peer)

    def go_away(self) -> None:
        """The server is stopping: cancel what runs, then close with 1001 (or just abort).

        Calls still running are answered with -32800 before the close frame.
        """
        if self._going_away:
            return
        self._going_away = True
        if self.conn.state is not ConnectionState.OPEN:
            if not self._closing:
                # Mid-handshake: there is nobody to say goodbye to yet.
                self.adapter.abort()
            return
        self._cancel_calls("Server shutting down")
        self.conn.close(CloseCode.GOING_AWAY, "server shutting down")
        self._handle_events()
        self.adapter.wake()

    # Timers

    def _arm(self, when: float) -> None:
        if when != self._deadline:
            self._deadline = when
            self.adapter.set_deadline(when)

    def on_deadline(self) -> None:
        """The deadline asked for has come: time out the handshake or the close, or expire."""
        self._deadline = math.inf
        if self.conn.state is ConnectionState.CONNECTING:
            logger.debug("handshake timeout on the connection from %s", self.peer)
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
        settings = self.settings
        if conn.state is not ConnectionState.OPEN:
            return
        if self._pong_deadline is not None and settings.ping_timeout is not None:
            if not self.adapter.reading():
                # We are not reading, so the pong may be sitting unread: the
                # peer gets a full deadline from when reading resumes.
                self._pong_deadline = now + settings.ping_timeout
            elif now >= self._pong_deadline:
                logger.debug("keepalive timeout on the connection from %s", self.peer)
                conn.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self._handle_events()
                self.adapter.wake()
            return
        if settings.ping_interval is not None and now >= self._next_ping:
            self._pong_payload = os.urandom(4)
            conn.ping(self._pong_payload)
            self._next_ping = now + settings.ping_interval
            if settings.ping_timeout is not None:
                self._pong_deadline = now + settings.ping_timeout
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
                    if event.payload == self._pong_payload:  # type: ignore[attr-defined]
                        self._pong_deadline = None
                elif kind is CallCancelled:
                    self._cancel_call(event.call)  # type: ignore[attr-defined]
                elif kind is HandshakeRequest:
                    self._decide(event)  # type: ignore[arg-type]
                elif kind is HTTPRequest:
                    self._answer_http(event)  # type: ignore[arg-type]
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

    # The handshake

    def _decide(self, request: HandshakeRequest) -> None:
        draining = self.server.draining
        if self._refuse or draining:
            security_logger.warning(
                "handshake from %s refused with 503: %s",
                self.peer,
                "server shutting down" if draining else "max_connections reached",
            )
            self.conn.reject(503)
            return
        try:
            admission = self.settings.guard.admit(request, self.address, now=time.time())
        except HandshakeRefused as refusal:
            # The reason is a fixed phrase (never the token), safe for log and body.
            security_logger.warning(
                "handshake from %s refused: HTTP %d %s", self.peer, refusal.status, refusal.reason
            )
            self.conn.reject(refusal.status, f"{refusal.reason}\n", refusal.headers)
            return
        self._admission = admission
        principal = admission.principal
        broker = self.settings.broker
        if broker is not None:
            # Before accept(): requests pipelined behind the handshake run in it.
            self._session = ConnectionSession(
                self.conn,
                broker,
                wake=self.adapter.wake,
                handle_events=self._handle_events,
                pending=self.pending_output,
                loop=self.server.loop,
                peer=self.peer,
            )
            self.conn.session = self._session
        self.conn.accept(self._choose_subprotocol(admission.subprotocols), principal=principal)
        logger.debug(
            "connection from %s accepted for %s",
            self.peer,
            "anonymous" if principal is None else principal.subject,
        )
        now = self.adapter.now()
        interval = self.settings.ping_interval
        if interval is not None:
            self._next_ping = now + interval
        if principal is not None and principal.expires_at is not None:
            self._expires_at = principal.expires_at
            self._arm(math.inf)
            self._check_expiry()
        else:
            self._arm(math.inf)

    def _answer_http(self, request: HTTPRequest) -> None:
        handler = self.settings.http_handler
        answer: tuple[int, list[tuple[str, str]], bytes] | None = None
        if handler is not None:  # pragma: no branch - the core emits these only with one
            try:
                answer = handler(request)
            except Exception:
                logger.exception("http_handler failed for %s %s", request.method, request.path)
                answer = (500, [], b"Internal Server Error\n")
        if answer is None:
            answer = (404, [], b"Not Found\n")
        status, headers, body = answer
        self.conn.respond(status, body, headers)

    def _choose_subprotocol(self, offered: tuple[str, ...]) -> str | None:
        """The subprotocol to answer with: ours, in our order of preference, if offered.

        ``offered`` comes without token entries (``bearer.<token>``), so a
        token is never echoed back. Failing those, ``mcp`` (the MCP dialect,
        which every server speaks) when offered.
        """
        chosen = next((name for name in self.settings.subprotocols if name in offered), None)
        if chosen is None and MCP_SUBPROTOCOL in offered:
            chosen = MCP_SUBPROTOCOL
        return chosen

    def _release(self) -> None:
        """Give back what the connection held under the security policy."""
        admission, self._admission = self._admission, None
        if admission is None:
            return
        self.settings.guard.release(admission)
        limiter = self.settings.guard.policy.rate_limiter
        if limiter is not None and admission.principal is None:
            # An anonymous connection's bucket can never be used again.
            limiter.forget(self._rate_key())

    def _rate_key(self) -> Hashable:
        # Namespaced, so that no token subject can name an anonymous connection's bucket.
        principal = self.conn.principal
        if principal is None:
            return ("connection", id(self))
        return ("principal", principal.subject)

    # Tool calls

    def _start_call(self, call: ToolCall) -> None:
        if self.server.draining:
            self.conn.fail(call, Cancelled("Server shutting down"))
            return
        limiter = self.settings.guard.policy.rate_limiter
        if limiter is not None:
            retry = limiter.check(self._rate_key(), call.tool.name, now=time.monotonic())
            if retry > 0:
                principal = self.conn.principal
                security_logger.info(
                    "call to %r by %s rate limited (retry after %.3f s)",
                    call.tool.name,
                    f"connection from {self.peer}" if principal is None else principal.subject,
                    retry,
                )
                refusal = RateLimited("Rate limit exceeded", data={"retry_after": retry})
                self.conn.fail(call, refusal)
                return
        if call.progress is not None and call.progress.token is not None:
            call.progress.bind(self._progress_sink(call))
        if call.tool.runs_inline:
            self._run_inline(call)
            return
        # Registered before spawning: an adapter may run the call at once.
        self._calls[call.id] = (call, _nothing)
        cancel = self.adapter.spawn(call)
        if call.id in self._calls:
            self._calls[call.id] = (call, cancel)

    def _run_inline(self, call: ToolCall) -> None:
        # The tool's coroutine cannot suspend (Tool.runs_inline), so one step
        # finishes it: no task, and its answer leaves with the others of this
        # read in one write. That is a task spawn saved per call.
        coro = call.tool.fn(**call.arguments)
        try:
            coro.send(None)
        except StopIteration as done:
            self.conn.complete(call, done.value)
            return
        except Exception as exc:  # noqa: BLE001 - a tool's failure is its caller's answer
            self._report_failure(call, exc)
            return
        # Unreachable for a tool that truly never awaits; refuse rather than run
        # a half-started coroutine outside any event loop.
        coro.close()
        self._report_failure(call, RuntimeError("tool suspended although it has no await"))

    def call_done(self, call: ToolCall, result: Any = None, error: Exception | None = None) -> None:
        """A spawned call ended with ``result`` or ``error``: answer it (unless cancelled)."""
        entry = self._calls.get(call.id)
        if entry is None or entry[0] is not call:
            # Cancelled: whoever cancelled the call answered it or let the core forget it
            # (a new call may reuse the id of one the client cancelled).
            return
        del self._calls[call.id]
        if error is not None:
            self._report_failure(call, error)
        else:
            self.conn.complete(call, result)
        self.server.call_finished()
        self._handle_events()

    def _cancel_call(self, call: ToolCall) -> None:
        """The client cancelled ``call`` (MCP): stop it; the core sends no answer."""
        entry = self._calls.get(call.id)
        if entry is None or entry[0] is not call:
            return  # Already answered (refused, or finished in this same batch).
        del self._calls[call.id]
        entry[1]()
        # Answering frees the call's slot in the core, which drops the answer itself.
        self.conn.fail(call, Cancelled("Cancelled by the client"))
        self.server.call_finished()

    def _cancel_calls(self, reason: str) -> None:
        calls, self._calls = self._calls, {}
        for call, cancel in calls.values():
            # Answered (-32800) while the connection is open; otherwise the core
            # only forgets the call.
            self.conn.fail(call, Cancelled(reason))
            cancel()
        if calls:
            self.server.call_finished()

    def _report_failure(self, call: ToolCall, error: Exception) -> None:
        if not isinstance(error, RPCError) and not self.conn.mask_errors:
            # When masking, the core logs it once, with the correlation id.
            logger.error("tool %r raised", call.tool.name, exc_info=error)
        self.conn.fail(call, error)

    def _progress_sink(self, call: ToolCall) -> Callable[[float, float | None, str | None], bool]:
        """Deliver ``call``'s progress reports from the loop or from a tool's worker thread."""
        loop = self.server.loop

        def deliver(value: float, total: float | None, message: str | None) -> bool:
            sent = self.conn.report_progress(call, value, total, message)
            if sent:
                self.adapter.wake()
            return sent

        def sink(value: float, total: float | None, message: str | None) -> bool:
            if threading.get_ident() == loop.thread:
                return deliver(value, total, message)
            try:
                return loop.run(deliver, value, total, message)
            except RuntimeError:  # pragma: no cover - needs a loop that ended mid-report
                # The loop is gone: an abandoned sync tool reporting after the end.
                return False

        return sink


def _nothing() -> None:
    """The canceller of a call whose adapter has not yet said how to cancel it."""
