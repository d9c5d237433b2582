"""The client on asyncio (and uvloop): an :class:`asyncio.Protocol` drives the core.

No reader task: ``data_received`` feeds the core and sets the waiting calls'
futures in the same callback, one pass per message. A call waits on a plain
:class:`asyncio.Future` (the cheapest waiter asyncio has); its timeout is the
session's one loop timer per connection setting that future, not a cancel
scope. Writes go straight to the transport (several callers woken by one read
share one write); its ``pause_writing``/``resume_writing`` make callers wait
while its buffer is over the high-water mark, and ``pause_reading`` stops the
socket while the core's ``wants_read`` is false.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import anyio

from securemcp.protocol import ConnectionState

from ._client_io import ClientIO, Signal, Waiter
from ._client_target import Target, system_error
from ._read_buffer import read_buffer

if TYPE_CHECKING:
    from ._client_session import ClientSession

__all__ = ["AsyncioIO"]

_CLOSED = ConnectionState.CLOSED


async def _connect(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.BaseProtocol,
    target: Target,
    ssl_context: ssl.SSLContext | None,
    url: str,
) -> None:
    """Try the target's addresses in turn; raise the first one's error if none answers.

    Not ``create_connection(host, port)``: on Python 3.11 it reports several
    failed addresses as one bare OSError("Multiple exceptions: ..."), where
    users expect the ConnectionRefusedError they would get from a socket.
    """
    infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, _, proto, _, address in infos:
        host, port = cast(str, address[0]), cast(int, address[1])
        try:
            await loop.create_connection(
                lambda: protocol,
                host,
                port,
                family=family,
                proto=proto,
                ssl=ssl_context,
                server_hostname=target.host if ssl_context is not None else None,
            )
        except ssl.SSLError:
            raise  # the server was reached; another of its addresses will not do better
        except OSError as exc:
            errors.append(exc)
        else:
            return
    # getaddrinfo() raises rather than return no address, so there is an error.
    raise system_error(errors[0], url)


class AsyncioIO(asyncio.BufferedProtocol, ClientIO):
    """One client connection as an asyncio protocol."""

    def __init__(self, session: ClientSession, loop: asyncio.AbstractEventLoop) -> None:
        self._session = session
        self._conn = session.conn
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._write_paused = False
        self._reading_paused = False
        self._writable = Signal()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, session: ClientSession, deadline: float) -> AsyncioIO | None:
        loop = asyncio.get_running_loop()
        io = cls(session, loop)
        with anyio.move_on_at(deadline):
            await _connect(loop, io, session.target, session.ssl_context, session.url)
            return io
        return None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        # The thread's shared buffer, not a fresh 256 KiB bytes per read.
        return read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(read_buffer()[:nbytes]))

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        conn.receive_data(data)
        events = conn.events_received()
        self._session.handle(events)
        if len(events) > 1:
            # Several callers woken: they run before this flush (call_soon is
            # FIFO), so their next requests leave in one write, still in this
            # loop iteration. With one, its caller writes at once (write()).
            # Measured with 1 and 64 calls in flight against always one or the
            # other: as fast as the better of the two in each case.
            self._schedule_flush()
        else:
            # Pongs and close replies, if any.
            self._flush()
        if not conn.wants_read and conn.state is not _CLOSED and not self._reading_paused:
            # At the core's limit: not reading is what makes TCP push back.
            self._reading_paused = True
            cast(asyncio.Transport, self._transport).pause_reading()

    def eof_received(self) -> None:
        self._session.lost()

    def connection_lost(self, exc: Exception | None) -> None:
        self._session.lost()
        if not self._lost.done():
            self._lost.set_result(None)
        # Callers held back by backpressure must see the end.
        self._write_paused = False
        self._writable.fire()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._writable.fire()

    # Writing

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write all the core holds in one ``transport.write``; close once the core is closed."""
        self._flush_scheduled = False
        conn = self._conn
        transport = self._transport
        assert transport is not None
        while data := conn.data_to_send():
            # Draining the output may let the core process input it held back.
            self._session.handle(conn.events_received())
            if not transport.is_closing():
                transport.write(data)
        if self._reading_paused and conn.wants_read:
            self._reading_paused = False
            transport.resume_reading()
        if conn.state is _CLOSED and not transport.is_closing():
            transport.close()

    # ClientIO

    def time(self) -> float:
        return self._loop.time()

    def waiter(self) -> Waiter:
        return self._loop.create_future()

    async def wait(self, waiter: Waiter) -> Any:
        return await cast("asyncio.Future[Any]", waiter)

    def arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._session.expire(self._loop.time())

    @property
    def write_blocked(self) -> bool:
        return self._write_paused

    async def writable(self) -> None:
        await self._writable.wait(self)

    def write(self) -> None:
        # A flush already scheduled sends our bytes too, with the others'.
        if not self._flush_scheduled:
            self._flush()

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await task()

        self._tasks.append(self._loop.create_task(run()))

    def abort(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.abort()  # connection_lost() follows: the session sees the loss

    async def shutdown(self, deadline: float) -> None:
        self._session.lost()
        if self._timer is not None:
            self._timer.cancel()
        transport = self._transport
        if transport is not None:
            if not transport.is_closing():
                self._flush()
            with anyio.move_on_at(deadline, shield=True):
                await self._lost
            if not self._lost.done():
                transport.abort()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            with anyio.move_on_at(deadline, shield=True):
                await asyncio.wait(self._tasks)
