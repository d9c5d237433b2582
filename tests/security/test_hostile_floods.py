"""Floods on an open connection whose answers nobody reads, on asyncio and trio.

The server stops reading instead of buffering, answers only as fast as the peer
reads, and its memory stays bounded: 10 000 pipelined requests, 200 requests
read at once, a ping flood (alone, and behind a large answer being written).
:func:`hostile_server` then proves that a bystander and a fresh client are
still served promptly.
"""

from __future__ import annotations

import json
import struct

import anyio
import anyio.lowlevel
import pytest

from ..helpers import MASK, OP_PING, OP_PONG, OP_TEXT, client_frame, server_frame, text_frame
from .attacks import (
    FLOOD_BOUND,
    FLOOD_LIMITS,
    FLOOD_MSS,
    FLOOD_RCVBUF,
    MAX_FLOOD,
    READ_SIZE,
    STALL,
    MiB,
    RawWriter,
    check_growth,
    flood_unread,
    still_answers,
    widen_receive_window,
)
from .conftest import PROBE_TIMEOUT, MemoryWatch, RawPeer, hostile_server


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


# Floods: the server stops reading instead of buffering, and memory stays bounded.


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
