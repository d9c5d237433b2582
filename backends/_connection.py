"""One accepted server connection: the core on a socket, its tool calls and its timers.

A :class:`ServerSideConnection` owns one socket and one
:class:`~securemcp.protocol.ServerConnection`. Everything it does happens in one
cancel scope (the connection's life) holding one task group:

- the reader loop (the caller's task): read up to 64 KiB, feed the core, act on
  its events, write what it produced; it stops reading while the core's
  ``wants_read`` is false, so a peer with too many calls in flight is pushed
  back by TCP;
- one task per tool call; sync tools run in a worker thread;
- the keepalive task, once the handshake is accepted;
- the expiry task, when the principal's credentials expire (close 1008).

The handshake is decided by the server's security policy (Origin, credentials,
connection caps: see :mod:`._security`); tool calls pass its rate limiter.

Timers are deadlines on the connection's cancel scope: the handshake deadline
until the upgrade is decided, then none, then the close deadline once the
closing handshake starts. Reaching a deadline aborts the connection (the socket
is closed without more ado), which is the only time a write is ever cancelled.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

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

from ._pubsub import ConnectionSession
from ._security import Admission, ConnectionGuard, security_logger

__all__ = ["ServerSettings", "ServerSideConnection"]

logger = logging.getLogger("securemcp")

READ_SIZE = 65536
"""Bytes asked of the socket per read."""

# What a socket may raise when the peer goes away or the bytes are not TLS:
# they end that connection quietly (DEBUG), never the server.
_IO_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError)


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


HTTPHandler = Callable[[HTTPRequest], "tuple[int, list[tuple[str, str]], bytes] | None"]
"""``handler(request) -> (status, headers, body)``, or ``None`` for 404 Not Found."""


def _deadline_in(seconds: float | None) -> float:
    return math.inf if seconds is None else anyio.current_time() + seconds


class ServerSideConnection:
    """Serve one accepted socket until it closes; :meth:`run` never raises."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        settings: ServerSettings,
        *,
        limiter: anyio.CapacityLimiter,
        refuse: bool = False,
        draining: Callable[[], bool] = lambda: False,
        on_call_done: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.conn = ServerConnection(
            settings.app,
            limits=settings.limits,
            mask_errors=settings.guard.policy.mask_errors,
            http=settings.http_handler is not None,
        )
        remote = stream.extra(SocketAttribute.remote_address, None)
        self.peer = "?" if remote is None else str(remote)
        # The connection caps count client IP addresses, whatever the port.
        self.address: str | None = remote[0] if isinstance(remote, tuple) else remote
        self._admission: Admission | None = None
        self._stream = stream
        self._limiter = limiter
        self._refuse = refuse
        self._draining = draining
        self._on_call_done = on_call_done
        # Shielded: the server's own cancellation must not cut connections short;
        # it drains them and then says goodbye (see go_away()).
        self._scope = anyio.CancelScope(shield=True)
        self._tg: anyio.abc.TaskGroup | None = None
        # One writer at a time: the task that finds nobody writing becomes the
        # writer and sends until the core has nothing left. A flag, not a lock:
        # everything here runs on the event loop's thread, and an anyio lock
        # costs a current-task lookup per acquire (12% of the CPU of 100
        # connections with one call each in flight).
        self._writing = False
        self._write_idle: anyio.Event | None = None
        # Keyed by request id (unique among calls in flight, the core sees to
        # that): ToolCall events compare equal to one another, whatever their id.
        self._calls: dict[RequestId, tuple[ToolCall, anyio.CancelScope]] = {}
        self._paused = False
        self._resume: anyio.Event | None = None
        # Keepalive state, advanced by the server's keepalive_tick(): a task per
        # connection for it would cost ~5 KiB per idle connection.
        self._next_ping = math.inf
        self._pong_deadline: float | None = None
        self._pong_payload = b""
        self._closing = False
        self._going_away = False
        self._flush_scheduled = False
        self._session: ConnectionSession | None = None

    @property
    def calls_in_flight(self) -> int:
        """Tool calls started and not yet answered."""
        return len(self._calls)

    # Life

    async def run(self) -> None:
        """Serve the connection until it is over, then close the socket."""
        logger.debug("connection from %s", self.peer)
        try:
            with self._scope:
                # go_away() may have come first; our streams do not all check
                # for cancellation on every call, so look once here.
                await anyio.lowlevel.checkpoint_if_cancelled()
                self._scope.deadline = _deadline_in(self.settings.handshake_timeout)
                if self.settings.ssl is not None:
                    self._stream = await TLSStream.wrap(
                        self._stream,
                        server_side=True,
                        ssl_context=self.settings.ssl,
                        # WebSocket has its own closing handshake; a missing
                        # TLS close_notify is not a truncation attack here.
                        standard_compatible=False,
                    )
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self._read_loop()
                    tg.cancel_scope.cancel()
        except _IO_ERRORS as exc:
            # Only the TLS handshake gets here; later I/O errors end the loop.
            logger.debug("connection from %s failed: %r", self.peer, exc)
        except Exception:
            logger.exception("unexpected error on the connection from %s", self.peer)
        finally:
            self._tg = None
            if self._scope.cancelled_caught:
                what = "handshake" if self.conn.state is ConnectionState.CONNECTING else "close"
                logger.debug("%s timeout on the connection from %s", what, self.peer)
            self._cancel_calls("Connection closed")
            if self._session is not None:
                self._session.close()
            self._release()
            with anyio.CancelScope(shield=True):
                try:
                    await self._stream.aclose()
                except (*_IO_ERRORS, anyio.EndOfStream):
                    pass
            logger.debug("connection from %s closed", self.peer)

    def go_away(self) -> None:
        """The server is stopping: cancel what runs, then close with 1001 (or just abort).

        Calls still running are answered with -32800 before the close frame.
        """
        if self._going_away:
            return
        self._going_away = True
        if self._tg is None or self.conn.state is not ConnectionState.OPEN:
            if not self._closing:
                # Mid-handshake: there is nobody to say goodbye to yet.
                self._scope.cancel()
            return
        self._cancel_calls("Server shutting down")
        self._handle_events()
        self.conn.close(CloseCode.GOING_AWAY, "server shutting down")
        self._handle_events()
        self._tg.start_soon(self._flush)

    def abort(self) -> None:
        """End the connection now, without a closing handshake."""
        self._scope.cancel()

    # Reading

    async def _read_loop(self) -> None:
        conn = self.conn
        while conn.state is not ConnectionState.CLOSED:
            if not conn.wants_read:
                # At a limit: not reading is what makes TCP push back on the peer.
                self._paused = True
                self._resume = anyio.Event()
                await self._resume.wait()
                self._resume = None
                self._paused = False
                continue
            try:
                data = await self._stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                conn.receive_eof()
            except _IO_ERRORS as exc:
                logger.debug("connection from %s lost: %r", self.peer, exc)
                conn.receive_eof()
            else:
                conn.receive_data(data)
            self._handle_events()
            await self._flush(wait=True)

    # Writing

    async def _flush(self, *, wait: bool = False) -> None:
        """Write everything the core has to send.

        If another task is writing, it sends what we added too (it loops until
        the core is empty): return at once, or with ``wait`` once it is done,
        which is how the reader loop lets a slow peer slow it down.
        """
        if self._writing:
            if wait:
                if self._write_idle is None:
                    self._write_idle = anyio.Event()
                await self._write_idle.wait()
            return
        self._writing = True
        try:
            while True:
                data = self.conn.data_to_send()
                # Draining the output can unpause buffered requests.
                self._handle_events()
                if not data:
                    return
                try:
                    await self._stream.send(data)
                except _IO_ERRORS as exc:
                    logger.debug("connection from %s lost while writing: %r", self.peer, exc)
                    self.conn.receive_eof()
                    self._handle_events()
                    self._scope.cancel()
                    return
        finally:
            self._writing = False
            if self._write_idle is not None:
                self._write_idle.set()
                self._write_idle = None

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
                break
            for event in events:
                if isinstance(event, ToolCall):
                    self._start_call(event)
                elif isinstance(event, CallCancelled):
                    self._cancel_call(event.call)
                elif isinstance(event, HandshakeRequest):
                    self._decide(event)
                elif isinstance(event, HTTPRequest):
                    self._answer_http(event)
                elif isinstance(event, PongReceived):
                    if event.payload == self._pong_payload:
                        self._pong_deadline = None
                elif isinstance(event, ConnectionClosed):
                    logger.debug(
                        "connection from %s closed with code %d %s",
                        self.peer,
                        event.code,
                        event.reason,
                    )
                    self._cancel_calls("Connection closed")
        if (
            self._resume is not None
            and self._paused
            and (conn.wants_read or conn.state is ConnectionState.CLOSED)
        ):
            self._resume.set()

    def _decide(self, request: HandshakeRequest) -> None:
        if self._refuse or self._draining():
            security_logger.warning(
                "handshake from %s refused with 503: %s",
                self.peer,
                "server shutting down" if self._draining() else "max_connections reached",
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
                wake=self._schedule_flush,
                handle_events=self._handle_events,
                peer=self.peer,
            )
            self.conn.session = self._session
        self.conn.accept(self._choose_subprotocol(admission.subprotocols), principal=principal)
        logger.debug(
            "connection from %s accepted for %s",
            self.peer,
            "anonymous" if principal is None else principal.subject,
        )
        self._scope.deadline = math.inf
        if self._tg is None:  # pragma: no cover - decisions happen inside run()'s task group
            return
        interval = self.settings.ping_interval
        if interval is not None:
            self._next_ping = anyio.current_time() + interval
        if principal is not None and principal.expires_at is not None:
            self._tg.start_soon(self._expire, principal.subject, principal.expires_at)

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

    async def _expire(self, subject: str, expires_at: float) -> None:
        """Close with 1008 once the credentials expire (``expires_at`` in POSIX seconds)."""
        # Expiry is wall-clock time, sleeping is on the loop's clock: check the
        # wall clock again on waking, in case it was set back meanwhile.
        while True:
            remaining = expires_at - time.time()
            if not remaining > 0:  # a NaN expiry counts as expired: fail closed
                break
            # A day at most per sleep: an infinite expiry must not overflow a timer.
            await anyio.sleep(min(remaining, 86400.0))
        if self.conn.state is not ConnectionState.OPEN:
            return
        security_logger.info(
            "credentials of %s expired: closing the connection from %s with 1008",
            subject,
            self.peer,
        )
        # Closing cancels the calls still running (see _start_closing).
        self.conn.close(CloseCode.POLICY_VIOLATION, "token expired")
        self._handle_events()
        await self._flush()

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

    def _start_closing(self) -> None:
        # Answers can no longer be sent: stop the work, free the core's slots,
        # and give the peer close_timeout seconds to finish the handshake.
        self._closing = True
        self._cancel_calls("Connection closing")
        if self.conn.state is not ConnectionState.CLOSED:
            self._scope.deadline = min(
                self._scope.deadline, _deadline_in(self.settings.close_timeout)
            )

    # Tool calls

    def _start_call(self, call: ToolCall) -> None:
        if self._draining() or self._tg is None:
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
        scope = anyio.CancelScope()
        self._calls[call.id] = (call, scope)
        self._tg.start_soon(self._run_call, call, scope)

    def _run_inline(self, call: ToolCall) -> None:
        # The tool's coroutine cannot suspend (Tool.runs_inline), so one step
        # finishes it: no task, no cancel scope, and its answer joins the others
        # of this read in one write. That is a task spawn saved per call, the
        # largest single cost of small calls under load (benchmarks/RESULTS.md).
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

    def _cancel_call(self, call: ToolCall) -> None:
        """The client cancelled ``call`` (MCP): stop it; the core sends no answer."""
        entry = self._calls.get(call.id)
        if entry is None or entry[0] is not call:
            return  # Already answered (refused, or finished in this same batch).
        del self._calls[call.id]
        entry[1].cancel()
        # Answering frees the call's slot in the core, which drops the answer itself.
        self.conn.fail(call, Cancelled("Cancelled by the client"))
        self._on_call_done()

    def _progress_sink(self, call: ToolCall) -> Callable[[float, float | None, str | None], bool]:
        """Deliver ``call``'s progress reports from the loop or from a tool's worker thread."""
        token = anyio.lowlevel.current_token()
        loop_thread = threading.get_ident()

        def deliver(value: float, total: float | None, message: str | None) -> bool:
            sent = self.conn.report_progress(call, value, total, message)
            if sent:
                self._schedule_flush()
            return sent

        def sink(value: float, total: float | None, message: str | None) -> bool:
            if threading.get_ident() == loop_thread:
                return deliver(value, total, message)
            try:
                return anyio.from_thread.run_sync(deliver, value, total, message, token=token)
            except RuntimeError:  # pragma: no cover - needs a loop that ended mid-report
                # The loop is gone: an abandoned sync tool reporting after the end.
                return False

        return sink

    def _schedule_flush(self) -> None:
        # One pending flush serves any number of progress reports made meanwhile.
        if self._flush_scheduled or self._tg is None:
            return
        self._flush_scheduled = True
        self._tg.start_soon(self._scheduled_flush)

    async def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        await self._flush()

    def _cancel_calls(self, reason: str) -> None:
        calls, self._calls = self._calls, {}
        for call, scope in calls.values():
            # Answered (-32800) while the connection is open; otherwise the core
            # only forgets the call.
            self.conn.fail(call, Cancelled(reason))
            scope.cancel()
        if calls:
            self._on_call_done()

    def _report_failure(self, call: ToolCall, error: Exception) -> None:
        if not isinstance(error, RPCError) and not self.conn.mask_errors:
            # When masking, the core logs it once, with the correlation id.
            logger.error("tool %r raised", call.tool.name, exc_info=error)
        self.conn.fail(call, error)

    async def _run_call(self, call: ToolCall, scope: anyio.CancelScope) -> None:
        tool = call.tool
        result: Any = None
        error: Exception | None = None
        with scope:
            try:
                if tool.is_async:
                    result = await tool.fn(**call.arguments)
                else:
                    result = await anyio.to_thread.run_sync(
                        functools.partial(tool.fn, **call.arguments),
                        abandon_on_cancel=True,
                        limiter=self._limiter,
                    )
            except Exception as exc:  # noqa: BLE001 - a tool's failure is its caller's answer
                error = exc
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
        self._on_call_done()
        self._handle_events()
        # Not waiting for a writer already at work: it sends our answer too, and
        # waiting would only pile up finished calls, results and all, behind a
        # peer that does not read (tests/security: the 10 000 pipelined requests).
        await self._flush()

    # Keepalive

    def keepalive_tick(self, now: float) -> None:
        """Ping the peer when a ping is due; close with 1011 if its pong is overdue.

        Called by the server for every connection a few times per interval.
        """
        conn = self.conn
        settings = self.settings
        if conn.state is not ConnectionState.OPEN or self._tg is None:
            return
        if self._pong_deadline is not None and settings.ping_timeout is not None:
            if self._paused:
                # We are not reading, so the pong may be sitting unread: the
                # peer gets a full deadline from when reading resumes.
                self._pong_deadline = now + settings.ping_timeout
            elif now >= self._pong_deadline:
                logger.debug("keepalive timeout on the connection from %s", self.peer)
                conn.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self._handle_events()
                self._schedule_flush()
            return
        if settings.ping_interval is not None and now >= self._next_ping:
            self._pong_payload = os.urandom(4)
            conn.ping(self._pong_payload)
            self._next_ping = now + settings.ping_interval
            if settings.ping_timeout is not None:
                self._pong_deadline = now + settings.ping_timeout
            # Written by another task, so that a stuck write never holds up the
            # server's ticks; the close deadline ends a write that never finishes.
            self._schedule_flush()
