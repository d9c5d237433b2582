"""Connections without a socket: a client and a server joined in memory, for the test kit.

Each event loop gets what its server path reads from, so that the server code
under test is the code that serves real sockets:

- on asyncio, two :class:`MemoryTransport` objects, each the other's peer, in
  place of the socket transports under the client's and the server's
  ``asyncio.Protocol``;
- on trio (anyio), two byte streams made of anyio memory object streams, in
  place of the TCP streams the anyio server and client read.

What a socket does that the code under test relies on is kept: bytes arrive
in order, later (never inside the writer's own call), at most
:data:`READ_SIZE` at a time; a side that stops reading makes the other's
writes pile up until it is told to pause (backpressure); a close arrives as
the end of the stream after the last bytes, an abort as a reset.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteStream
from anyio.streams.stapled import StapledObjectStream

__all__ = [
    "READ_SIZE",
    "MemoryTransport",
    "StreamProtocol",
    "memory_stream_pair",
    "memory_transport_pair",
]

READ_SIZE = 65536
"""Bytes handed to a protocol per delivery, as a socket read would."""

_HIGH_WATER = 64 * 1024
"""asyncio's default write-buffer high-water mark."""

_STREAM_CHUNKS = 16
"""Writes a memory stream holds unread before its writer waits (a socket buffer's part)."""


class StreamProtocol(Protocol):
    """What a transport calls on its protocol (``asyncio.Protocol``'s callbacks)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory connection on asyncio, as a socket transport behaves.

    What this end writes waits here until the peer end hands it to its
    protocol (soon, in a loop callback, while the peer reads); its size is the
    write buffer, paused and resumed at the usual water marks. Callbacks run
    in ``context``, as a real transport's run in the context it was made in.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: StreamProtocol,
        context: contextvars.Context,
        extra: Mapping[str, Any],
    ) -> None:
        super().__init__(dict(extra))
        self._loop = loop
        self._protocol = protocol
        self._context = context
        self._peer: MemoryTransport = self  # set by memory_transport_pair
        self._unread = bytearray()
        """What this end wrote and the peer has not read yet."""
        self._reading = True
        self._closing = False
        self._lost = False
        self._delivery: asyncio.Handle | None = None
        self._high, self._low = _HIGH_WATER, _HIGH_WATER // 4
        self._write_paused = False

    def _soon(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle:
        return self._loop.call_soon(callback, *args, context=self._context)

    # asyncio.BaseTransport

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; once the peer has read what this end wrote, end the connection.

        What the peer sent that this end had not read is dropped, as a socket
        closed with unread data does.
        """
        if self._closing:
            return
        self._closing = True
        peer = self._peer
        if peer._unread:
            peer._unread.clear()
            peer._drained()
        if not self._unread:
            self._finish()

    # Reading: this end's protocol gets what the peer wrote

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._want_delivery()

    def _want_delivery(self) -> None:
        if self._delivery is None and self._reading and not self._closing:
            self._delivery = self._soon(self._deliver)

    def _deliver(self) -> None:
        self._delivery = None
        if not self._reading or self._closing:
            return
        peer = self._peer
        data = bytes(peer._unread[:READ_SIZE])
        del peer._unread[:READ_SIZE]
        if data:
            self._protocol.data_received(data)
        if peer._unread:
            self._want_delivery()
        peer._drained()

    # Writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # As on a socket: bytes for a peer that is gone are dropped.
        if self._closing or self._peer._closing or not data:
            return
        self._unread += data
        self._peer._want_delivery()
        if not self._write_paused and len(self._unread) > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _drained(self) -> None:
        """The peer took some of this end's bytes."""
        if self._write_paused and len(self._unread) <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._closing and not self._unread and not self._lost:
            self._finish()

    def get_write_buffer_size(self) -> int:
        return len(self._unread)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    def abort(self) -> None:
        """Drop the connection now: unsent bytes are lost, the peer sees a reset."""
        if self._lost:
            return
        self._closing = True
        self._unread.clear()
        self._lose(None)
        self._peer._reset()

    # The end of the connection

    def _finish(self) -> None:
        """This end is closed and the peer has read everything it wrote."""
        self._lose(None)
        peer = self._peer
        if not peer._lost:
            peer._soon(peer._end_of_stream)

    def _end_of_stream(self) -> None:
        if self._lost:
            return
        self._unread.clear()  # nobody reads it any more
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self._closing = True
            self._lose(None)

    def _reset(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._unread.clear()
        self._lose(ConnectionResetError("connection reset by peer"))

    def _lose(self, exc: Exception | None) -> None:
        self._lost = True
        if self._delivery is not None:
            self._delivery.cancel()
            self._delivery = None
        self._soon(self._protocol.connection_lost, exc)


def memory_transport_pair(
    client: StreamProtocol,
    server: StreamProtocol,
    *,
    client_context: contextvars.Context,
    server_context: contextvars.Context,
    client_address: tuple[str, int],
    server_address: tuple[str, int],
) -> None:
    """Join ``client`` and ``server`` with two transports and tell both they are connected."""
    loop = asyncio.get_running_loop()
    ends = (
        MemoryTransport(
            loop, client, client_context, {"peername": server_address, "sockname": client_address}
        ),
        MemoryTransport(
            loop, server, server_context, {"peername": client_address, "sockname": server_address}
        ),
    )
    ends[0]._peer, ends[1]._peer = ends[1], ends[0]
    client_context.run(client.connection_made, ends[0])
    server_context.run(server.connection_made, ends[1])


class _MemoryByteStream(BufferedByteStream):
    """One end of an in-memory byte stream, with the peer's address a socket would report."""

    def __init__(self, stream: anyio.abc.ObjectStream[bytes], remote: tuple[str, int]) -> None:
        super().__init__(stream)
        self._remote = remote

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {SocketAttribute.remote_address: lambda: self._remote}


def memory_stream_pair(
    client_address: tuple[str, int], server_address: tuple[str, int]
) -> tuple[anyio.abc.ByteStream, anyio.abc.ByteStream]:
    """Two anyio byte streams joined in memory: ``(client end, server end)``."""
    to_server, from_client = anyio.create_memory_object_stream[bytes](_STREAM_CHUNKS)
    to_client, from_server = anyio.create_memory_object_stream[bytes](_STREAM_CHUNKS)
    return (
        _MemoryByteStream(StapledObjectStream(to_server, from_server), server_address),
        _MemoryByteStream(StapledObjectStream(to_client, from_client), client_address),
    )
