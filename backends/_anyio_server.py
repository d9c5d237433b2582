"""The anyio path (trio, and asyncio on request): one task per connection driving its driver.

The connection's task reads, feeds the :class:`ConnectionDriver` and writes what
it produced before reading again, so a peer that does not read its answers
stops being read (TCP pushes back). A call that suspends runs in a task of the
server's task group in a cancel scope of its own; deadlines (handshake, close,
credential expiry) are kept by a cancel scope around the connection's reading,
whose deadline moves in place. No task group or event belongs to an idle
connection.

Writes: one task at a time is the writer and sends until the driver has
nothing left; others return at once (their bytes go out with the writer's),
and the reader waits for the writer. A flag, not a lock: everything runs on the
event loop's thread, and a lock costs a current-task lookup per acquire.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from securemcp.protocol import ToolCall

from ._calls import Gate, guarded, run_call
from ._driver import ConnectionDriver

if TYPE_CHECKING:
    from ._serving import _Server

__all__ = ["StreamConnection", "serve_listener"]

logger = logging.getLogger("securemcp")

READ_SIZE = 65536
"""Bytes asked of the socket per read."""

# What a socket may raise when the peer goes away or the bytes are not TLS:
# they end that connection quietly (DEBUG), never the server.
_IO_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError)


class StreamConnection:
    """One server connection on an anyio byte stream (an adapter of :class:`ConnectionDriver`)."""

    __slots__ = (
        "_cut",
        "_deadline",
        "_flush_wanted",
        "_paused",
        "_resume",
        "_scope",
        "_server",
        "_stream",
        "_timer",
        "_write_idle",
        "_writing",
        "driver",
    )

    def __init__(self, stream: anyio.abc.ByteStream, server: _Server, *, refuse: bool) -> None:
        self._server = server
        self._stream = stream
        self.driver = ConnectionDriver(
            server, self, stream.extra(SocketAttribute.remote_address, None), refuse=refuse
        )
        # Shielded: the server's own cancellation must not cut connections short;
        # it drains them and then says goodbye. abort() cancels it.
        self._scope = anyio.CancelScope(shield=True)
        # The deadline, and the scope that keeps it while the task serves (see _serve).
        self._deadline = math.inf
        self._timer: anyio.CancelScope | None = None
        self._cut = False
        self._writing = False
        self._write_idle: anyio.Event | None = None
        self._flush_wanted = False
        self._paused = False
        self._resume: anyio.Event | None = None

    async def run(self) -> None:
        """Serve the connection until it is over, then close the socket; never raises."""
        driver = self.driver
        try:
            with self._scope:
                # go_away() may have come first; our streams do not all check
                # for cancellation on every call, so look once here.
                await anyio.lowlevel.checkpoint_if_cancelled()
                driver.start()
                await self._serve()
        except _IO_ERRORS as exc:
            # Only the TLS handshake gets here; later I/O errors end the loop.
            logger.debug("connection from %s failed: %r", driver.peer, exc)
        except Exception:
            logger.exception("unexpected error on the connection from %s", driver.peer)
        finally:
            self.set_deadline(math.inf)
            driver.connection_lost()
            with anyio.CancelScope(shield=True):
                try:
                    await self._stream.aclose()
                except (*_IO_ERRORS, anyio.EndOfStream):
                    pass

    async def _serve(self) -> None:
        """TLS, then the read loop, under the driver's deadline (see :meth:`set_deadline`)."""
        driver = self.driver
        tls = self._server.settings.ssl
        while not driver.finished:
            with anyio.CancelScope(deadline=self._deadline) as timer:
                self._timer = timer
                if tls is not None:
                    self._stream = await TLSStream.wrap(
                        self._stream,
                        server_side=True,
                        ssl_context=tls,
                        # WebSocket has its own closing handshake; a missing
                        # TLS close_notify is not a truncation attack here.
                        standard_compatible=False,
                    )
                    tls = None
                await self._read_loop()
            self._timer = None
            if timer.cancelled_caught:
                self._deadline = math.inf
                driver.on_deadline()
                if self._cut:
                    # The deadline cut a write short: the stream holds half a
                    # frame and can carry nothing more.
                    self.abort()
                await self._flush()

    async def _read_loop(self) -> None:
        driver = self.driver
        receive = self._stream.receive
        while not driver.finished:
            if not driver.wants_read:
                # At a limit: not reading is what makes TCP push back on the peer.
                self._paused = True
                self._resume = anyio.Event()
                try:
                    await self._resume.wait()
                finally:
                    self._resume = None
                    self._paused = False
                continue
            try:
                data = await receive(READ_SIZE)
            except anyio.EndOfStream:
                driver.eof_received()
            except _IO_ERRORS as exc:
                logger.debug("connection from %s lost: %r", driver.peer, exc)
                driver.eof_received()
            else:
                driver.data_received(data)
            await self._flush(wait=True)

    # Writing

    async def _flush(self, *, wait: bool = False) -> None:
        """Write everything the driver has to send.

        If another task is writing, it sends what we added too (it loops until
        the driver is empty): return at once, or with ``wait`` once it is done,
        which is how the reader lets a slow peer slow it down.
        """
        if self._writing:
            if wait:
                if self._write_idle is None:
                    self._write_idle = anyio.Event()
                await self._write_idle.wait()
            return
        self._writing = True
        driver = self.driver
        try:
            while True:
                chunks = driver.take_output()
                self._maybe_resume()
                if not chunks:
                    if driver.finished:
                        # Ended by a task (an HTTP answer saying close): the
                        # reader may be waiting for bytes that never come.
                        self._scope.cancel()
                    return
                try:
                    for chunk in chunks:
                        await self._stream.send(chunk)
                except anyio.get_cancelled_exc_class():
                    self._cut = True
                    raise
                except _IO_ERRORS as exc:
                    logger.debug("connection from %s lost while writing: %r", driver.peer, exc)
                    driver.eof_received()
                    self._scope.cancel()
                    return
        finally:
            self._writing = False
            if self._write_idle is not None:
                self._write_idle.set()
                self._write_idle = None

    def _maybe_resume(self) -> None:
        if self._resume is not None and (self.driver.wants_read or self.driver.finished):
            self._resume.set()

    async def _scheduled_flush(self) -> None:
        self._flush_wanted = False
        # Shielded: a write cut short by the server's cancellation would leave
        # half a frame; a peer that never reads is ended by the close timeout.
        with anyio.CancelScope(shield=True):
            await self._flush()

    # The driver's adapter

    def now(self) -> float:
        return anyio.current_time()

    def wake(self) -> None:
        # One pending flush serves any number of wake-ups made meanwhile.
        if self._flush_wanted or self._writing:
            self._maybe_resume()
            return
        self._flush_wanted = True
        self._server.task_group.start_soon(self._scheduled_flush)

    def spawn(self, call: ToolCall, gate: Gate | None = None) -> Callable[[], object]:
        # Shielded like the connection: a stopping server lets calls finish
        # (shutdown_grace) rather than cutting them off; cancel() still works.
        scope = anyio.CancelScope(shield=True)
        self._server.task_group.start_soon(self._run_call, call, scope, gate)
        return scope.cancel

    async def _run_call(self, call: ToolCall, scope: anyio.CancelScope, gate: Gate | None) -> None:
        with scope:
            await run_call(self.driver, call, self._server.limiter, gate)
            # Still in the (shielded) scope, which nobody cancels once the call
            # is answered. Not waiting for a writer already at work: it sends
            # our answer too, and waiting would only pile up finished calls,
            # results and all, behind a peer that does not read
            # (tests/security: the 10 000 pipelined requests).
            await self._flush()

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._server.task_group.start_soon(self._run_work, work)

    async def _run_work(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # Shielded: the server's cancellation must not cut it short (a slot
        # taken in Redis and never given back); the server's task group waits.
        with anyio.CancelScope(shield=True):
            await guarded(work, self.driver)

    def set_deadline(self, when: float) -> None:
        # The connection's own task keeps the deadline: a scope around its
        # reading (see _serve), moved in place. A task per deadline cost a
        # task, two scopes and a cancellation per connection (a sixth of
        # trio's CPU for a connection per call, S3c).
        self._deadline = when
        if self._timer is not None:
            self._timer.deadline = when

    def abort(self) -> None:
        self._scope.cancel()

    def buffered(self) -> int:
        return 0  # every write is awaited: nothing waits below the driver

    def reading(self) -> bool:
        return not self._paused and not self._writing


async def serve_listener(
    server: _Server, listener: anyio.abc.SocketListener, task_group: anyio.abc.TaskGroup
) -> None:
    """Accept connections from ``listener`` until cancelled, each served in a task."""
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            # Out of file descriptors, most likely: back off instead of spinning.
            logger.error("[WS] accept() failed: %s", exc)
            await anyio.sleep(0.1)
            continue
        refuse = server.admitted >= server.max_connections
        connection = StreamConnection(stream, server, refuse=refuse)
        # Registered before its task starts, so that a shutdown beginning now sees it.
        server.add(connection, admitted=not refuse)
        task_group.start_soon(_serve_connection, server, connection)


async def _serve_connection(server: _Server, connection: StreamConnection) -> None:
    try:
        await connection.run()
    finally:
        server.remove(connection)
