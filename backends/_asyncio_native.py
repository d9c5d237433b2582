"""Sockets for the server on asyncio, straight on asyncio's protocols.

anyio's asyncio socket stream resumes and pauses the transport's reading around
every ``receive()`` (two ``epoll_ctl`` calls per message) and yields to the
event loop on every ``send()``. For a server that answers small messages that
is most of the per-message cost (benchmarks/RESULTS.md, profiles). These
classes keep reading switched on until a buffer high-water mark is reached and
only yield when they must wait, while remaining anyio ``SocketStream`` /
``SocketListener`` objects: the connection code, TLS wrapping, cancel scopes
and timeouts work on them unchanged. On trio the server keeps anyio's streams.

Fairness: a peer whose bytes are always ready could otherwise keep its reader
loop from ever yielding, so every few reads that needed no wait the stream
yields once anyway.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["NativeListener", "NativeStream", "open_native_listener"]

HIGH_WATER = 256 * 1024
"""Unread bytes past which the transport stops reading (TCP then pushes back)."""
LOW_WATER = 64 * 1024
"""Unread bytes under which reading resumes."""
YIELD_EVERY = 16
"""Reads served without waiting before one is made to yield to other tasks."""


class _Wakeup:
    """One task waiting for the protocol (bytes to read, or room to write)."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        finally:
            self._future = None

    def wake(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)


class _Protocol(asyncio.Protocol):
    """Buffers what the transport reads and wakes the one task waiting for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # A list, not a deque: it rarely holds more than a chunk or two, and an
        # empty deque preallocates ~600 bytes, for every idle connection.
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.reading_paused = False
        self.eof = False
        self.error: BaseException | None = None
        self.readable = _Wakeup()
        self.write_paused = False
        self.drained = _Wakeup()
        self.accepted: asyncio.Queue[NativeStream] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)
        if self.accepted is not None:
            self.accepted.put_nowait(NativeStream(self.transport, self))

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport:
            self.transport.pause_reading()
            self.reading_paused = True
        self.readable.wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.readable.wake()
        return True  # Keep our side open: the connection code decides when to close.

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.readable.wake()
        self.write_paused = False
        self.drained.wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.drained.wake()


class NativeStream(anyio.abc.SocketStream):
    """One accepted TCP connection as an anyio byte stream, on asyncio's transport."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._ready_reads = 0

    @property
    def _raw_socket(self) -> socket.socket:
        # asyncio hands out a TransportSocket, which offers the read-only socket
        # methods anyio's extra attributes use (family, getsockname, getpeername).
        return cast(socket.socket, self._transport.get_extra_info("socket"))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        protocol = self._protocol
        if protocol.chunks:
            self._ready_reads += 1
            if self._ready_reads >= YIELD_EVERY:
                self._ready_reads = 0
                await anyio.lowlevel.checkpoint()
        while not protocol.chunks:
            self._ready_reads = 0
            if self._closed:
                raise anyio.ClosedResourceError
            if protocol.eof:
                if protocol.error is not None:
                    raise anyio.BrokenResourceError from protocol.error
                raise anyio.EndOfStream
            await protocol.readable.wait()
        chunk = protocol.chunks.pop(0)
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            protocol.chunks.insert(0, rest)
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered <= LOW_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        protocol = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        if protocol.error is not None or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.error
        self._transport.write(item)
        # asyncio's transport buffers the write; past its high-water mark it asks
        # us to pause, and waiting here is what lets a slow reader slow us down.
        while protocol.write_paused:
            await protocol.drained.wait()
            if protocol.error is not None or self._transport.is_closing():
                raise anyio.BrokenResourceError from protocol.error

    async def send_eof(self) -> None:
        if self._transport.can_write_eof():
            self._transport.write_eof()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.close()
            self._protocol.readable.wake()
        await anyio.lowlevel.checkpoint()


class NativeListener(anyio.abc.SocketListener):
    """Connections accepted by an asyncio server, handed out one ``accept()`` at a time."""

    def __init__(self, server: asyncio.Server, accepted: asyncio.Queue[NativeStream]) -> None:
        self._server = server
        self._accepted = accepted

    @property
    def _raw_socket(self) -> socket.socket:
        # Typed as socket.socket by typeshed; really a TransportSocket (see above).
        return self._server.sockets[0]

    async def accept(self) -> NativeStream:
        return await self._accepted.get()

    async def aclose(self) -> None:
        self._server.close()
        # Connections accepted but never served are closed too.
        while not self._accepted.empty():
            self._accepted.get_nowait()._transport.abort()
        await self._server.wait_closed()


async def open_native_listener(host: str, port: int) -> NativeListener:
    """Listen on ``host``:``port`` (every address the host resolves to) with asyncio."""
    accepted: asyncio.Queue[NativeStream] = asyncio.Queue()

    def factory() -> _Protocol:
        protocol = _Protocol()
        protocol.accepted = accepted
        return protocol

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host, port, reuse_address=True)
    return NativeListener(server, accepted)
