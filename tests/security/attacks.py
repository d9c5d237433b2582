"""What the WebSocket attacks and their HTTP twins share: peers held until dropped, floods timed.

:func:`opened_peers` holds many half-sent requests and
:func:`dropped_at_the_timeout` watches them until the server drops them;
:func:`flood_until` keeps a flooding peer busy; :func:`slowest_call`
times a bystander's calls meanwhile. :func:`answer` and :func:`still_answers`
read a WebSocket peer's answers; :class:`RawWriter` and :func:`flood_unread`
flood a server with requests nobody reads, under the ``FLOOD_*`` limits, and
:func:`check_growth` holds its memory to ``FLOOD_BOUND``. :func:`malformed_requests`
lists the broken requests both dialects answer with a null id.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from securemcp.protocol import Limits

from ..helpers import OP_TEXT, text_frame
from .conftest import MemoryWatch, RawPeer


def malformed_requests(envelope: str) -> list[pytest.ParameterSet]:
    """``(text, code)`` params: requests an answer must give a null id, each object
    starting with ``envelope`` (the dialect's own members, such as ``"jsonrpc": "2.0", ``)."""

    def request(members: str) -> str:
        return "{" + envelope + members + "}"

    return [
        pytest.param(request('"id": 1, "method": ')[:-1], -32700, id="truncated-json"),
        pytest.param("{'id': 1}", -32700, id="not-json"),
        pytest.param("NaN", -32700, id="nan"),
        pytest.param("42", -32600, id="number"),
        pytest.param('"ping"', -32600, id="string"),
        pytest.param("null", -32600, id="null"),
        pytest.param("[" + request('"id": 1, "method": "ping"') + "]", -32600, id="batch"),
        pytest.param("[]", -32600, id="empty-batch"),
        pytest.param(request('"id": [1], "method": "ping"'), -32600, id="array-id"),
        pytest.param(request('"id": {"a": 1}, "method": "ping"'), -32600, id="object-id"),
        pytest.param(request('"id": true, "method": "ping"'), -32600, id="bool-id"),
        pytest.param(request('"id": 1.5, "method": "ping"'), -32600, id="float-id"),
        pytest.param(request('"id": null, "method": "ping"'), -32600, id="null-id"),
    ]


EARLY = 0.9
"""A timer may not fire before this fraction of its duration (scheduling leeway);
one firing at half its duration fails."""


P = TypeVar("P", bound=RawPeer)


@asynccontextmanager
async def opened_peers(
    open_peer: Callable[[], Awaitable[P]], count: int
) -> AsyncIterator[tuple[list[P], list[float]]]:
    """``count`` peers from ``open_peer()``, each with the time just before it connected
    (the server's timer cannot start earlier); all closed when the block ends."""
    peers: list[P] = []
    opened: list[float] = []
    try:
        for _ in range(count):
            opened.append(anyio.current_time())
            peers.append(await open_peer())
        yield peers, opened
    finally:
        for peer in peers:
            await peer.stream.aclose()


async def dropped_at_the_timeout(
    peers: Sequence[RawPeer],
    opened: Sequence[float],
    after: float,
    meanwhile: Callable[[], Awaitable[None]],
) -> None:
    """Each of ``peers`` (opened at ``opened``) is dropped ``after`` seconds, no byte answered.

    Not before that (the server's timeout), and not long after; ``meanwhile()``
    runs while they hang.
    """
    closed = [math.inf] * len(peers)
    received = [b""] * len(peers)

    async def watch(index: int) -> None:
        received[index] = await peers[index].until_eof()
        closed[index] = anyio.current_time()

    with anyio.fail_after(after + 5.0):
        async with anyio.create_task_group() as tg:
            for index in range(len(peers)):
                tg.start_soon(watch, index)
            await meanwhile()
    assert received == [b""] * len(peers)
    lived = [end - start for start, end in zip(opened, closed, strict=True)]
    assert min(lived) >= EARLY * after, f"closed after {min(lived):.3f} s"
    assert max(lived) < after + 2.0, f"closed after {max(lived):.3f} s"


async def flood_until(
    stop: anyio.Event, send: Callable[[], Awaitable[None]], read_one: Callable[[], Awaitable[None]]
) -> int:
    """``send()`` again and again until ``stop``, reading answers meanwhile; how many were read."""
    answered = 0

    async def read() -> None:
        nonlocal answered
        while True:
            await read_one()
            answered += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        while not stop.is_set():
            await send()
        tg.cancel_scope.cancel()
    return answered


async def slowest_call(call: Callable[[], Awaitable[None]], times: int = 20) -> float:
    """The longest of ``times`` calls of ``call()``, in seconds (each bounded by 5 s)."""
    slowest = 0.0
    for _ in range(times):
        start = anyio.current_time()
        with anyio.fail_after(5):
            await call()
        slowest = max(slowest, anyio.current_time() - start)
    return slowest


# What the WebSocket message attacks share: an answer read, the connection still served.

MiB = 1024 * 1024
T = TypeVar("T")


async def answer(peer: RawPeer) -> Any:
    opcode, payload = await peer.next_frame()
    assert opcode == OP_TEXT
    return json.loads(payload)


async def still_answers(peer: RawPeer) -> None:
    """The attacked connection itself still works (for faults that do not close it)."""
    await peer.stream.send(text_frame({"id": "after", "method": "ping"}))
    assert await answer(peer) == {"id": "after", "result": {"pong": True}}


FLOOD_LIMITS = Limits(max_pending_output=64 * 1024, max_in_flight=16, max_message_size=64 * 1024)
READ_SIZE = 65536
FLOOD_RCVBUF = 16 * 1024
FLOOD_SNDBUF = 64 * 1024
FLOOD_MSS = 1024
FLOOD_BOUND = (
    4 * FLOOD_LIMITS.max_pending_output
    + 4 * READ_SIZE
    + FLOOD_LIMITS.max_in_flight * 8 * 1024
    + 1536 * 1024
)
"""Python memory a flooded connection may make the process hold, about 2.1 MiB.

Twice the core's output limit (the buffer, and the joined copy being written),
as much again in the event loop's write buffer, one read of input and the
parser's copies of it, the calls in flight, the raw peer's own buffers, and
slack for the objects of live connections and the event loop. A server that
read everything would hold all the answers: 10 MiB (pipelined requests), or
as many pongs as the flood had pings (several MiB)."""
STALL = 0.5
"""Seconds in which the kernel takes none of the flooding client's bytes, after
which the client counts as pushed back. A server that stopped reading never
takes another byte, so this only sets how long the test waits for that; it
cannot fail a server that behaves."""
MAX_FLOOD = 16 * MiB
"""Bytes a client may write without being pushed back before the verdict is that
the server never stops reading: several times what the kernel buffers of a
loopback connection hold (1-2 MiB with FLOOD_MSS, up to about 6 MiB without),
and few enough to be written within the case's timeout."""


class RawWriter:
    """Non-blocking writes to the server, on a duplicate of a raw peer's socket.

    It shows what an anyio stream hides: how many bytes the kernel accepted,
    and that it stopped accepting them because the server stopped reading.
    The duplicate shares the connection; closing it leaves the peer's socket
    open.
    """

    def __init__(self, peer: RawPeer) -> None:
        raw = peer.stream.extra(SocketAttribute.raw_socket)
        self.sock = socket.socket(fileno=os.dup(raw.fileno()))
        self.sock.setblocking(False)
        # A small send buffer: the client's own kernel buffer must not swallow
        # megabytes of the flood before the push back can show.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FLOOD_SNDBUF)
        self.sent = 0
        """Bytes the kernel accepted so far."""
        self._rest = memoryview(b"")

    def __enter__(self) -> RawWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    async def write(self, data: bytes | memoryview, *, stall: float | None = None) -> bool:
        """Write ``data``; return False if pushed back first.

        With ``stall``, give up once the kernel has accepted nothing for
        ``stall`` seconds, keeping the unwritten rest for :meth:`finish`.
        Without, wait as long as it takes (the peer reads its answers meanwhile).
        """
        assert not self._rest, "finish() the stalled write first"
        rest = memoryview(data)
        while rest:
            try:
                written = self.sock.send(rest)
            except BlockingIOError:
                if stall is None:
                    await anyio.wait_writable(self.sock)
                    continue
                with anyio.move_on_after(stall):
                    await anyio.wait_writable(self.sock)
                    continue
                self._rest = rest
                return False
            self.sent += written
            rest = rest[written:]
        # The server runs in this process: let it run even when the kernel took everything.
        await anyio.lowlevel.checkpoint()
        return True

    async def finish(self) -> None:
        """Write what a stalled write left, waiting as long as it takes."""
        rest, self._rest = self._rest, memoryview(b"")
        if rest:
            await self.write(rest)


def widen_receive_window(peer: RawPeer) -> None:
    """Let the answers through at full speed now that the peer reads them.

    The tiny receive buffer that made the peer fill up quickly would make
    reading crawl.
    """
    raw = peer.stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)


async def flood_unread(
    peer: RawPeer,
    requests: bytes,
    read: Callable[[], Awaitable[T]],
    check: Callable[[MemoryWatch, str], int],
) -> tuple[T, int]:
    """Write ``requests`` unread until pushed back, then ``read()`` the answers; the peak growth.

    ``check`` bounds the server's memory while the peer does not read, then over
    the whole flood.
    """
    with RawWriter(peer) as writer, MemoryWatch() as memory:
        await writer.write(requests, stall=STALL)
        check(memory, "while the client wrote without reading")
        widen_receive_window(peer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.finish)
            result = await read()
        return result, check(memory, "over the whole flood")


def check_growth(memory: MemoryWatch, when: str, bound: int = FLOOD_BOUND) -> int:
    """The peak memory growth so far, which must be under ``bound``."""
    growth = memory.peak_growth()
    assert growth < bound, f"server grew by {growth} bytes {when}, bound {bound}"
    return growth
