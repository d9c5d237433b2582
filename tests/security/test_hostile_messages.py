"""Hostile messages on an open connection, against a real server on asyncio and trio.

Each case asserts the defined answer (a JSON-RPC error code or a close code);
:func:`hostile_server` then proves that a bystander and a fresh client are
still served promptly.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from securemcp.protocol import Limits

from ..helpers import (
    MASK,
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    client_frame,
    server_frame,
    text_frame,
)
from .conftest import (
    PROBE_TIMEOUT,
    MemoryWatch,
    RawPeer,
    hostile_server,
    send_chunked,
    upgrade_with,
)

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


def blob_requests(count: int, size: int) -> bytes:
    """``count`` pipelined calls of the ``blob`` tool, ids 0 to ``count - 1``."""
    return b"".join(
        text_frame(
            {"id": n, "method": "invoke_tool", "params": {"tool_name": "blob",
                                                          "params": {"size": size}}}
        )
        for n in range(count)
    )  # fmt: skip


async def blob_answers(peer: RawPeer, count: int, size: int) -> set[int]:
    """Read ``count`` answers of the ``blob`` tool (``size`` bytes each); their ids."""
    ids: set[int] = set()
    for _ in range(count):
        opcode, payload = await peer.next_frame()
        assert opcode == OP_TEXT
        reply = json.loads(payload)
        assert reply["result"] == "x" * size
        ids.add(reply["id"])
    return ids


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param('{"id": 1, "method": ', -32700, id="truncated-json"),
        pytest.param("{'id': 1}", -32700, id="not-json"),
        pytest.param("NaN", -32700, id="nan"),
        pytest.param("42", -32600, id="number"),
        pytest.param('"ping"', -32600, id="string"),
        pytest.param("null", -32600, id="null"),
        pytest.param('[{"id": 1, "method": "ping"}]', -32600, id="batch"),
        pytest.param("[]", -32600, id="empty-batch"),
        pytest.param('{"id": [1], "method": "ping"}', -32600, id="array-id"),
        pytest.param('{"id": {"a": 1}, "method": "ping"}', -32600, id="object-id"),
        pytest.param('{"id": true, "method": "ping"}', -32600, id="bool-id"),
        pytest.param('{"id": 1.5, "method": "ping"}', -32600, id="float-id"),
        pytest.param('{"id": null, "method": "ping"}', -32600, id="null-id"),
    ],
)
async def test_malformed_request_gets_its_error_with_a_null_id(text: str, code: int) -> None:
    async with hostile_server() as server, server.open_peer() as peer:
        await peer.stream.send(client_frame(text.encode()))
        reply = await answer(peer)
        assert reply["id"] is None
        assert reply["error"]["code"] == code
        await still_answers(peer)


@pytest.mark.anyio
async def test_unknown_method_and_tool_and_bad_params() -> None:
    async with hostile_server() as server, server.open_peer() as peer:
        await peer.stream.send(
            text_frame({"id": 1, "method": "rm -rf"})
            + text_frame({"id": 2, "method": "invoke_tool", "params": {"tool_name": "nope"}})
            + text_frame({"id": 3, "method": "invoke_tool", "params": {"tool_name": "echo"}})
            + text_frame({"id": 4, "method": "invoke_tool", "params": "echo"})
        )
        codes = {}
        for _ in range(4):
            reply = await answer(peer)
            codes[reply["id"]] = reply["error"]["code"]
        assert codes == {1: -32601, 2: -32601, 3: -32602, 4: -32602}
        await still_answers(peer)


@pytest.mark.anyio
async def test_200_000_deep_nesting_is_a_parse_error_answered_at_once() -> None:
    text = b"[" * 200_000 + b"]" * 200_000
    async with hostile_server() as server, server.open_peer() as peer:
        with anyio.fail_after(2.0):
            await peer.stream.send(client_frame(text))
            reply = await answer(peer)
        assert reply["id"] is None
        assert reply["error"]["code"] == -32700
        await still_answers(peer)


@pytest.mark.anyio
async def test_message_over_the_limit_sent_whole_closes_1009() -> None:
    async with hostile_server() as server, server.open_peer() as peer:
        await send_chunked(peer.stream, client_frame(b'"' + b"x" * MiB + b'"'))
        assert await peer.close_code() == 1009


@pytest.mark.anyio
async def test_message_over_the_limit_in_many_small_fragments_closes_1009() -> None:
    # 1000 fragments (under max_fragments) of 1100 bytes: past 1 MiB at the 954th.
    chunk = b"x" * 1100
    frames = client_frame(b'"', OP_TEXT, fin=False)
    frames += client_frame(chunk, OP_CONT, fin=False) * 999
    frames += client_frame(b'"', OP_CONT)
    async with hostile_server() as server, server.open_peer() as peer:
        await send_chunked(peer.stream, frames)
        assert await peer.close_code() == 1009


@pytest.mark.anyio
async def test_a_flood_of_empty_fragments_closes_1009_at_max_fragments() -> None:
    frames = client_frame(b"", OP_TEXT, fin=False) + client_frame(b"", OP_CONT, fin=False) * 5000
    async with hostile_server() as server, server.open_peer() as peer:
        await send_chunked(peer.stream, frames)
        assert await peer.close_code() == 1009


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(client_frame(b'{"id":1,"method":"\xff"}'), 1007, id="invalid-utf8"),
        pytest.param(
            client_frame(b'"\xe2\x82', OP_TEXT, fin=False) + client_frame(b'"', OP_CONT),
            1007,
            id="utf8-cut-across-fragments",
        ),
        pytest.param(client_frame(b"\x00\x01\x02", OP_BINARY), 1003, id="binary"),
        pytest.param(client_frame(b"ping", masked=False), 1002, id="unmasked"),
        pytest.param(client_frame(b"x", 0x3), 1002, id="reserved-opcode"),
        pytest.param(client_frame(b"x", OP_CONT), 1002, id="orphan-continuation"),
        pytest.param(client_frame(b"x" * 126, OP_PING), 1002, id="oversized-control"),
    ],
)
async def test_frame_level_violation_gets_its_close_code(frame: bytes, code: int) -> None:
    async with hostile_server() as server, server.open_peer() as peer:
        await peer.stream.send(frame)
        assert await peer.close_code() == code


@pytest.mark.anyio
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_client_vanishing_mid_call_cancels_the_call(reset: bool) -> None:
    async with hostile_server() as server:
        async with server.open_peer() as peer:
            await peer.stream.send(
                text_frame({"id": 1, "method": "invoke_tool", "params": {"tool_name": "hold"}})
            )
            await server.log.started.wait()
            if reset:
                # Linger 0: the close sends a TCP RST instead of a FIN.
                raw = peer.stream.extra(SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await server.log.cancelled.wait()


# Floods: the server stops reading instead of buffering, and memory stays bounded.

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


@pytest.mark.anyio
async def test_10_000_pipelined_requests_unread_keep_server_memory_bounded() -> None:
    size = 1024
    requests = blob_requests(10_000, size)
    async with (
        hostile_server(limits=FLOOD_LIMITS) as server,
        server.open_peer(rcvbuf=FLOOD_RCVBUF, mss=FLOOD_MSS) as peer,
    ):
        # Every request, without reading an answer; the kernel buffers may
        # hold them all (1 MiB), the 10 MiB of answers they cannot.
        answered, growth = await flood_unread(
            peer, requests, lambda: blob_answers(peer, 10_000, size), check_growth
        )
        await still_answers(peer)
    # Every request was answered once the peer read: nothing was lost.
    assert answered == set(range(10_000))
    print(f"flood: peak growth {growth} bytes, bound {FLOOD_BOUND}")


@pytest.mark.anyio
async def test_requests_read_at_once_are_answered_only_as_fast_as_the_peer_reads() -> None:
    # 200 requests in one write (20 KB: the server reads them at once) for
    # 16 KiB answers each, 3.2 MiB in all, which the peer does not read yet.
    # The server may hold max_pending_output of answers, not all of them: it
    # leaves the other requests unhandled until the peer reads.
    size, count = 16 * 1024, 200
    requests = blob_requests(count, size)
    assert len(requests) < READ_SIZE
    answered: set[int] = set()
    async with (
        hostile_server(limits=FLOOD_LIMITS) as server,
        server.open_peer(rcvbuf=FLOOD_RCVBUF, mss=FLOOD_MSS) as peer,
    ):
        with RawWriter(peer) as writer, MemoryWatch() as memory:
            assert await writer.write(requests)
            # The first answer arrives once the server handled the read that
            # brought the requests: a server that handles them all holds all
            # the answers by now (the peak is checked again at the end anyway).
            await anyio.wait_readable(writer.sock)
            check_growth(memory, "once the answers began")
            widen_receive_window(peer)
            answered |= await blob_answers(peer, count, size)
            growth = check_growth(memory, "over the whole exchange")
        await still_answers(peer)
    assert answered == set(range(count))
    print(f"answers: peak growth {growth} bytes, bound {FLOOD_BOUND}")


PING_BATCH = 512
"""Pings per write: 512 x 131 bytes."""


def ping_frames(start: int, count: int) -> bytes:
    """Masked pings of 125 bytes (the most a control frame holds), numbered from ``start``.

    Built from one masked template: masking byte by byte in Python would take
    seconds for the megabytes a flood needs.
    """
    template = client_frame(b"\x00" * 4 + b"p" * 121, OP_PING)
    head, counter_at = template[:6], len(template) - 125
    assert template[2:6] == MASK
    tail = template[counter_at + 4 :]
    mask = int.from_bytes(MASK, "big")
    return b"".join(
        head + (n ^ mask).to_bytes(4, "big") + tail for n in range(start, start + count)
    )


def pong_frames(start: int, count: int) -> bytes:
    """The server's answers to :func:`ping_frames`: the same payloads, unmasked, in order."""
    return b"".join(
        server_frame(struct.pack("!I", n) + b"p" * 121, OP_PONG)
        for n in range(start, start + count)
    )


async def expect_bytes(peer: RawPeer, expected: bytes, what: str) -> None:
    """The server's next bytes are ``expected`` (compared whole: no megabyte diffs).

    They must come within :data:`PROBE_TIMEOUT`: the peer reads at full speed.
    """
    with anyio.move_on_after(PROBE_TIMEOUT) as waiting:
        received = await peer.receive_exactly(len(expected))
    if waiting.cancelled_caught:
        pytest.fail(f"{what}: not all there after {PROBE_TIMEOUT} s")
    if received != expected:
        at = next(
            (i for i, (a, b) in enumerate(zip(received, expected, strict=False)) if a != b),
            min(len(received), len(expected)),
        )
        pytest.fail(
            f"{what}: byte {at} differs: got {received[at : at + 12]!r} "
            f"(of {len(received)}), expected {expected[at : at + 12]!r}"
        )


async def answer_being_written(writer: RawWriter, size: int) -> bytes:
    """Ask for a ``size``-character answer; return once the server is writing it.

    The answer comes from a call's own task (the tool suspends first), not
    from the reader; it is larger than the kernel buffers between server and
    peer hold, so while the peer reads nothing that task stays in the middle
    of writing it. Returns the frame the peer must eventually receive.
    """
    request = {
        "id": "large",
        "method": "invoke_tool",
        "params": {"tool_name": "blob_later", "params": {"size": size}},
    }
    assert await writer.write(text_frame(request))
    # The first bytes of the answer reach the peer's socket (left unread).
    await anyio.wait_readable(writer.sock)
    return server_frame(b'{"id":"large","result":"' + b"x" * size + b'"}')


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer_size",
    [pytest.param(0, id="pongs-only"), pytest.param(MiB, id="behind-a-large-answer")],
)
async def test_ping_frame_flood_is_answered_with_bounded_memory(answer_size: int) -> None:
    # Pings until the server takes no more. Their pongs cannot reach a peer
    # that reads nothing, once the kernel buffers are full: of pongs, or of a
    # large answer written first, by another task than the reader. Then the
    # server must stop reading pings it cannot answer yet, not hold the pongs.
    async with (
        hostile_server(limits=FLOOD_LIMITS) as server,
        server.open_peer(rcvbuf=FLOOD_RCVBUF, mss=FLOOD_MSS) as peer,
    ):
        with RawWriter(peer) as writer:
            answer = b""
            if answer_size:
                answer = await answer_being_written(writer, answer_size)
            with MemoryWatch() as memory:
                count = 0
                while await writer.write(ping_frames(count, PING_BATCH), stall=STALL):
                    count += PING_BATCH
                    check_growth(memory, f"while reading {writer.sent} bytes of pings")
                    assert writer.sent < MAX_FLOOD, (
                        f"the server read {writer.sent} bytes of pings, its pongs unread, "
                        "and never stopped reading"
                    )
                count += PING_BATCH  # the batch cut short by the push back is finished below
                pushed_back_at = writer.sent
                check_growth(memory, f"when it stopped reading, after {pushed_back_at} bytes")
                # Reading lets the server resume: the answer, then every ping's pong, in order.
                widen_receive_window(peer)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(writer.finish)
                    for start in range(0, len(answer), READ_SIZE):
                        chunk = answer[start : start + READ_SIZE]
                        await expect_bytes(peer, chunk, f"the large answer at byte {start}")
                    for start in range(0, count, PING_BATCH):
                        expected = pong_frames(start, PING_BATCH)
                        await expect_bytes(peer, expected, f"the pongs from ping {start} on")
                growth = check_growth(memory, "over the whole flood")
        await still_answers(peer)
    print(
        f"flood: {count} pings, pushed back after {pushed_back_at} bytes; "
        f"peak growth {growth} bytes, bound {FLOOD_BOUND}"
    )


# permessage-deflate

DEFLATE_OFFER = upgrade_with([("Sec-WebSocket-Extensions", "permessage-deflate")])


def compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.anyio
async def test_decompression_bomb_closes_1009_without_inflating_it() -> None:
    bomb = compress(b'"' + b" " * (10 * MiB) + b'"')
    assert len(bomb) < 20_000
    limits = Limits(permessage_deflate=True)
    async with hostile_server(limits=limits) as server:
        peer = await server.peer(DEFLATE_OFFER)
        async with peer.stream:
            head = await peer.response_head()
            assert b"Sec-WebSocket-Extensions: permessage-deflate" in head
            await peer.next_frame()  # the welcome
            with MemoryWatch() as memory:
                await peer.stream.send(client_frame(bomb, rsv=0b100))
                code = await peer.close_code()
                peak = memory.peak_growth()
        assert code == 1009
        # The limit (1 MiB) inflated once, plus the copies wsproto makes: never 10 MiB.
        assert peak < 4 * limits.max_message_size, peak


@pytest.mark.anyio
async def test_compressed_messages_are_served_with_deflate_on() -> None:
    limits = Limits(permessage_deflate=True)
    text = json.dumps(
        {
            "id": 1,
            "method": "invoke_tool",
            "params": {"tool_name": "echo", "params": {"message": "y" * 1000}},
        }
    )
    async with hostile_server(limits=limits) as server:
        peer = await server.peer(DEFLATE_OFFER)
        async with peer.stream:
            await peer.response_head()
            # The server compresses with context takeover: inflate every message in turn.
            inflater = zlib.decompressobj(-15)
            _, welcome = await peer.next_frame()
            assert b"welcome" in inflater.decompress(welcome + b"\x00\x00\xff\xff")
            await peer.stream.send(client_frame(compress(text.encode()), rsv=0b100))
            _, payload = await peer.next_frame()
            reply = json.loads(inflater.decompress(payload + b"\x00\x00\xff\xff"))
            assert reply == {"id": 1, "result": "y" * 1000}
