"""The server's native asyncio sockets: flow control, end of stream, closing, fairness.

They exist only on asyncio (trio keeps anyio's streams), so these tests run on
asyncio alone; the backend tests exercise them end to end on every run.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from securemcp.backends._asyncio_native import (
    HIGH_WATER,
    LOW_WATER,
    YIELD_EVERY,
    NativeListener,
    NativeStream,
    open_native_listener,
)

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


@pytest.fixture
async def listener() -> AsyncIterator[NativeListener]:
    server = await open_native_listener("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.aclose()


async def _pair(listener: NativeListener) -> tuple[anyio.abc.SocketStream, NativeStream]:
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    client = await anyio.connect_tcp("127.0.0.1", port)
    with anyio.fail_after(5):
        server = await listener.accept()
    return client, server


async def _until(condition: Callable[[], bool]) -> None:
    # Waiting for the kernel to move bytes: bounded, and checked, not assumed.
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - no event to wait on for kernel buffers
            await anyio.sleep(0.005)


async def test_bytes_arrive_in_order_and_large_chunks_are_split(
    listener: NativeListener,
) -> None:
    client, server = await _pair(listener)
    async with client, server:
        await client.send(b"abcdef")
        await _until(lambda: server._protocol.buffered == 6)
        assert await server.receive(4) == b"abcd"
        assert await server.receive(4) == b"ef"
        assert server.extra(anyio.abc.SocketAttribute.remote_address)[0] == "127.0.0.1"


async def test_reading_pauses_past_the_high_water_mark_and_resumes_below_the_low(
    listener: NativeListener,
) -> None:
    client, server = await _pair(listener)
    protocol = server._protocol
    async with client, server:
        payload = b"x" * (HIGH_WATER + 65536)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send, payload)
            await _until(lambda: protocol.reading_paused)
            assert protocol.buffered > HIGH_WATER
            received = 0
            while protocol.reading_paused:
                received += len(await server.receive(65536))
            assert protocol.buffered <= LOW_WATER
            while received < len(payload):
                received += len(await server.receive(65536))
        assert received == len(payload)


async def test_end_of_stream_after_the_buffered_bytes(listener: NativeListener) -> None:
    client, server = await _pair(listener)
    async with server:
        await client.send(b"last words")
        await client.aclose()
        await _until(lambda: server._protocol.eof)
        assert await server.receive() == b"last words"
        with pytest.raises(anyio.EndOfStream):
            await server.receive()


async def test_closed_stream_refuses_reads_and_writes(listener: NativeListener) -> None:
    client, server = await _pair(listener)
    async with client:
        await server.aclose()
        await server.aclose()  # closing twice is harmless
        with pytest.raises(anyio.ClosedResourceError):
            await server.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await server.send(b"x")


async def test_writing_to_a_reset_peer_is_a_broken_resource(listener: NativeListener) -> None:
    client, server = await _pair(listener)
    async with server:
        raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
        # SO_LINGER 0: close() sends a reset instead of a FIN.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await client.aclose()
        await _until(lambda: server._protocol.eof)
        with pytest.raises(anyio.BrokenResourceError):
            await server.send(b"x")
        with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream)):
            await server.receive()


async def test_ready_reads_still_yield_to_other_tasks(listener: NativeListener) -> None:
    client, server = await _pair(listener)
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with client, server:
        for _ in range(YIELD_EVERY * 4):
            await client.send(b"y")
        await _until(lambda: server._protocol.buffered >= YIELD_EVERY * 4)
        # Make every byte its own chunk, as if each came in its own read.
        protocol = server._protocol
        joined = b"".join(protocol.chunks)
        protocol.chunks.clear()
        protocol.chunks.extend(joined[i : i + 1] for i in range(len(joined)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            await anyio.lowlevel.checkpoint()
            before = ticks
            for _ in range(YIELD_EVERY * 4):
                await server.receive(1)
            # Four reads in a row found their bytes ready; each round of
            # YIELD_EVERY let the other task run once.
            assert ticks - before >= 3
            tg.cancel_scope.cancel()
