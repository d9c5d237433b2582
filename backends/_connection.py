"""One accepted server connection: the core on a socket, its tool calls and its timers.

A :class:`ServerSideConnection` owns one socket and one
:class:`~securemcp.protocol.ServerConnection`. Everything it does happens in one
cancel scope (the connection's life) holding one task group:

- the reader loop (the caller's task): read up to 64 KiB, feed the core, act on
  its events, write what it produced; it stops reading while the core's
  ``wants_read`` is false, so a peer with too many calls in flight is pushed
  back by TCP;
- one task per tool call; sync tools run in a worker thread;
- the keepalive task, once the handshake is accepted.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from securemcp.app import SecureMCP
from securemcp.errors import Cancelled, RPCError
from securemcp.protocol import (
    CloseCode,
    ConnectionClosed,
    ConnectionState,
    HandshakeRequest,
    Limits,
    PongReceived,
    RequestId,
    ServerConnection,
    ToolCall,
)

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
        self.conn = ServerConnection(settings.app, limits=settings.limits)
        self.peer = str(stream.extra(SocketAttribute.remote_address, "?"))
        self._stream = stream
        self._limiter = limiter
        self._refuse = refuse
        self._draining = draining
        self._on_call_done = on_call_done
        # Shielded: the server's own cancellation must not cut connections short;
        # it drains them and then says goodbye (see go_away()).
        self._scope = anyio.CancelScope(shield=True)
        self._tg: anyio.abc.TaskGroup | None = None
        self._write_lock = anyio.Lock()
        # Keyed by request id (unique among calls in flight, the core sees to
        # that): ToolCall events compare equal to one another, whatever their id.
        self._calls: dict[RequestId, tuple[ToolCall, anyio.CancelScope]] = {}
        self._paused = False
        self._resume = anyio.Event()
        self._pong = anyio.Event()
        self._pong_payload = b""
        self._closing = False
        self._going_away = False

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
            await self._flush()

    # Writing

    async def _flush(self) -> None:
        # Taking the bytes inside the lock keeps them in the core's order; a
        # task waiting for the lock is how a slow reader slows us down.
        async with self._write_lock:
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
                elif isinstance(event, HandshakeRequest):
                    self._decide(event)
                elif isinstance(event, PongReceived):
                    if event.payload == self._pong_payload:
                        self._pong.set()
                elif isinstance(event, ConnectionClosed):
                    logger.debug(
                        "connection from %s closed with code %d %s",
                        self.peer,
                        event.code,
                        event.reason,
                    )
                    self._cancel_calls("Connection closed")
        if self._paused and (conn.wants_read or conn.state is ConnectionState.CLOSED):
            self._resume.set()

    def _decide(self, request: HandshakeRequest) -> None:
        if self._refuse or self._draining():
            self.conn.reject(503)
            return
        self.conn.accept()
        self._scope.deadline = math.inf
        interval = self.settings.ping_interval
        if interval is not None and self._tg is not None:
            self._tg.start_soon(self._keepalive, interval, self.settings.ping_timeout)

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
        scope = anyio.CancelScope()
        self._calls[call.id] = (call, scope)
        self._tg.start_soon(self._run_call, call, scope)

    def _cancel_calls(self, reason: str) -> None:
        calls, self._calls = self._calls, {}
        for call, scope in calls.values():
            # Answered (-32800) while the connection is open; otherwise the core
            # only forgets the call.
            self.conn.fail(call, Cancelled(reason))
            scope.cancel()
        if calls:
            self._on_call_done()

    async def _run_call(self, call: ToolCall, scope: anyio.CancelScope) -> None:
        tool = call.tool
        result: Any = None
        error: BaseException | None = None
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
        if self._calls.pop(call.id, None) is None:
            # Cancelled: whoever cancelled the call answered it or let the core forget it.
            return
        if error is not None:
            if not isinstance(error, RPCError):
                logger.error("tool %r raised", tool.name, exc_info=error)
            self.conn.fail(call, error)
        else:
            self.conn.complete(call, result)
        self._on_call_done()
        self._handle_events()
        await self._flush()

    # Keepalive

    async def _keepalive(self, interval: float, pong_deadline: float | None) -> None:
        conn = self.conn
        while True:
            await anyio.sleep(interval)
            if conn.state is not ConnectionState.OPEN or self._tg is None:
                return
            self._pong = pong = anyio.Event()
            self._pong_payload = os.urandom(4)
            conn.ping(self._pong_payload)
            # Written by another task so that the pong deadline never cuts a
            # write in half: a stuck write is ended by the close deadline instead.
            self._tg.start_soon(self._flush)
            if pong_deadline is None:
                continue
            while not pong.is_set():
                with anyio.move_on_after(pong_deadline):
                    await pong.wait()
                if pong.is_set():
                    break
                if self._paused:
                    # We are not reading, so the pong may be sitting unread:
                    # give the peer a full deadline once reading resumes.
                    await self._resume.wait()
                    continue
                logger.debug("keepalive timeout on the connection from %s", self.peer)
                conn.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self._handle_events()
                self._tg.start_soon(self._flush)
                return
