"""The asyncio path: each connection an ``asyncio.Protocol`` driving its :class:`ConnectionDriver`.

No task per connection and none per message: ``data_received`` feeds the
driver, which answers the calls that cannot suspend right there; a task is
started only for a call that really suspends. Timers are loop timers, armed
only while a deadline exists (handshake, close, credential expiry); the
keepalive is the server's ticker. TLS is asyncio's own SSL transport, uvloop's
on uvloop.

Writes are gathered per event-loop iteration: every connection that produced
output in this pass is written once, in one callback at the end of the pass.
Under load many answers then leave in one burst instead of one at a time
between reads, and on a virtual machine, where waking the peer's CPU for each
write is expensive, that is most of the cost of a small call with many
connections (benchmarks/RESULTS.md, S3).

Backpressure: reading pauses while the driver does not want input (calls in
flight or unsent output at their limits) and while the transport's write
buffer is over its high-water mark (``pause_writing``), so a peer that does not
read its answers is pushed back by TCP.

Reads land in the loop thread's one buffer (``asyncio.BufferedProtocol``, see
``_read_buffer.py``): a fresh 256 KiB bytes object per read cost a third of
the server's CPU under S3.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from securemcp.protocol import ToolCall

from ._calls import Gate, guarded, run_call
from ._driver import ConnectionDriver
from ._read_buffer import read_buffer

if TYPE_CHECKING:
    from ._serving import _Server

__all__ = ["ServerProtocol", "WriteBatch", "open_asyncio_server"]


class WriteBatch:
    """The connections with output waiting, written together at the end of the loop's pass.

    The first connection to have output in a pass writes at once, so that a
    lone connection (one call at a time: latency) pays no extra loop turn;
    those after it in the same pass wait for the pass to end and go out in one
    burst.
    """

    __slots__ = ("_loop", "_pass_open", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[ServerProtocol] = []
        self._pass_open = False

    def add(self, protocol: ServerProtocol) -> None:
        """Write ``protocol``'s output now, or with the others of this pass."""
        if protocol.queued:
            return
        if not self._pass_open:
            self._pass_open = True
            self._loop.call_soon(self._write_all)
            protocol.write_out()
            return
        protocol.queued = True
        self._waiting.append(protocol)

    def _write_all(self) -> None:
        self._pass_open = False
        waiting, self._waiting = self._waiting, []
        for protocol in waiting:
            protocol.queued = False
            protocol.write_out()


class ServerProtocol(asyncio.BufferedProtocol):
    """One server connection on an asyncio transport (an adapter of :class:`ConnectionDriver`)."""

    __slots__ = (
        "_lost",
        "_read_paused",
        "_server",
        "_timer",
        "_transport",
        "_write_paused",
        "driver",
        "queued",
    )

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self.driver: ConnectionDriver  # set by connection_made, asyncio's first call
        self._timer: asyncio.TimerHandle | None = None
        self._read_paused = False
        self._write_paused = False
        self._lost = False
        self.queued = False
        """Whether the write batch holds this connection."""

    # asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        # Reading pauses once this much output waits unsent (the core's own
        # output limit, or asyncio's default high-water mark if lower).
        high = min(server.write_high_water, 64 * 1024)
        self._transport.set_write_buffer_limits(high=high)
        refuse = server.admitted >= server.max_connections
        self.driver = ConnectionDriver(
            server, self, transport.get_extra_info("peername"), refuse=refuse
        )
        server.add(self, admitted=not refuse)
        self.driver.start()

    def get_buffer(self, sizehint: int) -> memoryview:
        return read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(read_buffer()[:nbytes]))

    def data_received(self, data: bytes) -> None:
        driver = self.driver
        driver.data_received(data)
        if driver.conn.pending_output or driver.finished:
            self._server.batch.add(self)
        if not driver.wants_read and not self._read_paused:
            self._update_reading()

    def eof_received(self) -> bool | None:
        self.driver.eof_received()
        self.write_out()
        return None  # asyncio closes the transport: the peer is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.driver.connection_lost()
        self._server.remove(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.write_out()

    # Writing

    def write_out(self) -> None:
        """Write everything the driver has to send; close once the connection is over."""
        driver, transport = self.driver, self._transport
        if self._lost or transport is None:
            return
        # Past the transport's high-water mark the rest waits in the core, which
        # then holds its input too: resume_writing() comes back for it.
        while not self._write_paused:
            chunks = driver.take_output()
            if not chunks:
                break
            for chunk in chunks:
                transport.write(chunk)
        if driver.finished:
            transport.close()  # after the buffered bytes are written
        else:
            self._update_reading()

    def _update_reading(self) -> None:
        driver, transport = self.driver, self._transport
        if self._lost or transport is None:
            return
        pause = not driver.wants_read or self._write_paused
        if pause != self._read_paused and not driver.finished:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # The driver's adapter

    def now(self) -> float:
        return self._server.loop_time()

    def wake(self) -> None:
        self._server.batch.add(self)

    def spawn(self, call: ToolCall, gate: Gate | None = None) -> Callable[[], object]:
        task = asyncio.get_running_loop().create_task(self._run(call, gate))
        self._server.track(task)
        return task.cancel

    async def _run(self, call: ToolCall, gate: Gate | None) -> None:
        await run_call(self.driver, call, self._server.limiter, gate)
        self._server.batch.add(self)

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # Tracked: the draining server waits for it. No anyio scope reaches it.
        self._server.track(asyncio.get_running_loop().create_task(guarded(work, self.driver)))

    def set_deadline(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when != math.inf and not self._lost:
            self._timer = asyncio.get_running_loop().call_at(when, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._timer = None
        self.driver.on_deadline()
        self.write_out()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def buffered(self) -> int:
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def reading(self) -> bool:
        return not self._read_paused


async def open_asyncio_server(
    server: _Server,
    host: str | None = None,
    port: int = 0,
    *,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """Listen on ``host``:``port`` (every address it resolves to) with asyncio protocols.

    With ``sock`` (bound and listening, then owned by the returned server),
    accept on it instead.
    """
    settings = server.settings
    loop = asyncio.get_running_loop()
    # The TLS handshake has its own bound; the WebSocket one starts after it.
    tls_timeout = settings.handshake_timeout if settings.ssl is not None else None
    if sock is not None:
        return await loop.create_server(
            lambda: ServerProtocol(server),
            sock=sock,
            ssl=settings.ssl,
            ssl_handshake_timeout=tls_timeout,
            backlog=server.backlog,
        )
    return await loop.create_server(
        lambda: ServerProtocol(server),
        host,
        port,
        ssl=settings.ssl,
        ssl_handshake_timeout=tls_timeout,
        reuse_address=True,
        backlog=server.backlog,
    )
