"""Floods and slow readers over MCP Streamable HTTP: the twins of the WebSocket floods.

The server must stop reading instead of buffering answers a peer does not
read, keep its memory under the WebSocket suite's bound (``FLOOD_BOUND``),
answer everything once the peer reads, and keep serving everyone else meanwhile.
"""

from __future__ import annotations

import dataclasses
import json

import anyio
import pytest

from securemcp.transport import HTTPClient

from .attacks import (
    FLOOD_BOUND,
    FLOOD_LIMITS,
    FLOOD_MSS,
    FLOOD_RCVBUF,
    MAX_FLOOD,
    READ_SIZE,
    STALL,
    RawWriter,
    check_growth,
    flood_unread,
    flood_until,
    slowest_call,
    widen_receive_window,
)
from .conftest import MemoryWatch, RawPeer, Server, hostile_server, wait_for
from .http_peer import HTTPPeer, http_probe, mcp_post, mcp_url, message, tool_call
from .test_fairness import BATCH, PROMPT

MiB = 1024 * 1024
HTTP_FLOOD_LIMITS = dataclasses.replace(FLOOD_LIMITS, max_http_requests=1_000_000)
"""The WebSocket flood's limits, and keep-alive connections that serve a flood whole."""


async def flood_peer(server: Server) -> HTTPPeer:
    """A peer whose small receive buffer fills after a few kilobytes of unread answers.

    It reads one answer first, as the WebSocket floods read the welcome: on
    asyncio, an anyio stream reads on its own until its first ``receive()``,
    which would swallow the answers the flood leaves unread.
    """
    raw: RawPeer = await server.peer(b"", rcvbuf=FLOOD_RCVBUF, mss=FLOOD_MSS)
    peer = HTTPPeer(raw.stream)
    await peer.stream.send(mcp_post(message("ping", "first")))
    assert (await peer.answer()).json()["id"] == "first"
    return peer


def blob_posts(count: int, size: int) -> bytes:
    """``count`` pipelined calls of ``blob``, ids 0 to ``count - 1``."""
    return b"".join(tool_call("blob", n, size=size) for n in range(count))


async def blob_answers(peer: HTTPPeer, count: int, size: int) -> list[int]:
    """Read ``count`` answers of ``blob`` (``size`` characters each); their ids, in order."""
    ids = []
    for _ in range(count):
        answer = await peer.answer()
        assert answer.status == 200
        reply = answer.json()
        assert reply["result"]["content"][0]["text"] == "x" * size
        ids.append(reply["id"])
    return ids


@pytest.mark.anyio
async def test_5000_pipelined_requests_unread_keep_server_memory_bounded() -> None:
    count, size = 5000, 2048  # 10 MiB of answers
    requests = blob_posts(count, size)
    async with hostile_server(limits=HTTP_FLOOD_LIMITS) as server:
        peer = await flood_peer(server)
        async with peer.stream:
            answered, growth = await flood_unread(
                peer, requests, lambda: blob_answers(peer, count, size), check_growth
            )
        await http_probe(server)
    assert answered == list(range(count))  # every one, once, in order
    print(f"HTTP flood: peak growth {growth} bytes, bound {FLOOD_BOUND}")


@pytest.mark.anyio
async def test_requests_read_at_once_are_answered_only_as_fast_as_the_peer_reads() -> None:
    # 150 requests in one write (under one read and the pipelining limit) for
    # 32 KiB answers each, 4.7 MiB in all, which the peer does not read yet.
    # The server may hold max_pending_output of answers, not all of them.
    count, size = 140, 32 * 1024
    requests = blob_posts(count, size)
    assert len(requests) < min(READ_SIZE, HTTP_FLOOD_LIMITS.max_http_pipelined)
    async with hostile_server(limits=HTTP_FLOOD_LIMITS) as server:
        peer = await flood_peer(server)
        async with peer.stream:
            with RawWriter(peer) as writer, MemoryWatch() as memory:
                assert await writer.write(requests)
                await anyio.wait_readable(writer.sock)  # the answers have begun
                check_growth(memory, "once the answers began")
                widen_receive_window(peer)
                answered = await blob_answers(peer, count, size)
                growth = check_growth(memory, "over the whole exchange")
        await http_probe(server)
    assert answered == list(range(count))
    print(f"HTTP answers: peak growth {growth} bytes, bound {FLOOD_BOUND}")


PING_BATCH = 200


async def large_answer(peer: HTTPPeer) -> int:
    """Read an answer piece by piece, keeping none of it; how many ``x`` its text held.

    Held whole, its copies would count against the server's memory bound.
    """
    head = await peer.response_head()
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    xs = 0
    while length:
        piece = await peer.receive_exactly(min(length, READ_SIZE))
        xs += piece.count(b"x")
        length -= len(piece)
    return xs


def ping_posts(start: int, count: int) -> bytes:
    return b"".join(mcp_post(message("ping", n)) for n in range(start, start + count))


@pytest.mark.anyio
async def test_a_request_flood_behind_a_large_answer_stops_being_read() -> None:
    # The ping flood's twin: a 1 MiB answer being written by a call's task to
    # a peer that reads nothing, then pings pipelined until the server takes
    # no more. It must stop reading them, not hold them (or their answers).
    async with hostile_server(limits=HTTP_FLOOD_LIMITS) as server:
        peer = await flood_peer(server)
        async with peer.stream:
            with RawWriter(peer) as writer:
                assert await writer.write(tool_call("blob_later", "large", size=MiB))
                await anyio.wait_readable(writer.sock)  # the answer is being written
                with MemoryWatch() as memory:
                    count = 0
                    while await writer.write(ping_posts(count, PING_BATCH), stall=STALL):
                        count += PING_BATCH
                        check_growth(memory, f"while reading {writer.sent} bytes of pings")
                        assert writer.sent < MAX_FLOOD, "the server never stopped reading"
                    count += PING_BATCH  # the batch cut short, finished below
                    pushed_back_at = writer.sent
                    widen_receive_window(peer)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(writer.finish)
                        # The text, and the x of a few keys ("text").
                        assert MiB <= await large_answer(peer) < MiB + 8
                        ids = [(await peer.answer()).json()["id"] for _ in range(count)]
                    growth = check_growth(memory, "over the whole flood")
        await http_probe(server)
    assert ids == list(range(count))
    print(f"HTTP pings: {count}, pushed back after {pushed_back_at} bytes; peak growth {growth}")


@pytest.mark.anyio
async def test_an_sse_stream_nobody_reads_holds_bounded_memory_and_starves_nobody() -> None:
    # 3000 progress reports of 4 KiB (12 MiB) to a peer that reads nothing:
    # past max_pending_output the reports are dropped (progress is advisory),
    # the call still ends, and its result is the stream's last event.
    count, size = 3000, 4096
    call = json.loads(
        message("tools/call", 1, name="chatter", arguments={"count": count, "size": size})
    )
    call["params"]["_meta"]["progressToken"] = "slow"
    async with hostile_server(limits=HTTP_FLOOD_LIMITS) as server:
        peer = await flood_peer(server)
        async with peer.stream:
            with RawWriter(peer) as writer, MemoryWatch() as memory:
                assert await writer.write(mcp_post(json.dumps(call).encode()))
                await wait_for(lambda: len(server.log.reports) == count)
                growth = check_growth(memory, "once the tool had reported everything")
                memory.stop()
                # Meanwhile everyone else is served.
                await http_probe(server)
                widen_receive_window(peer)
                answer = await peer.answer()
    sent = server.log.reports.count(True)
    assert 0 < sent < count  # some went out, the rest were dropped, not queued
    assert answer.headers["content-type"].startswith("text/event-stream")
    notes = [event["params"]["progress"] for event in answer.events[:-1]]
    assert notes == sorted(set(notes))  # in order
    assert len(notes) == sent  # each one sent arrived
    assert answer.json()["result"]["content"][0]["text"] == f"reported {count}"
    print(f"SSE slow reader: {sent} of {count} reports sent, peak growth {growth}")


async def _flood(peer: HTTPPeer, stop: anyio.Event) -> int:
    """Pipeline echo calls, reading the answers, until ``stop``; how many were answered."""
    batch = b"".join(tool_call("echo", n, message="flood") for n in range(BATCH))

    async def read_one() -> None:
        reply = (await peer.answer()).json()
        assert reply["result"]["content"][0]["text"] == "flood"

    return await flood_until(stop, lambda: peer.stream.send(batch), read_one)


@pytest.mark.anyio
async def test_a_flooding_http_connection_does_not_starve_another() -> None:
    async with hostile_server(limits=HTTP_FLOOD_LIMITS) as server:
        peer = await flood_peer(server)
        widen_receive_window(peer)
        async with peer.stream:
            stop = anyio.Event()
            flooded: list[int] = []
            async with anyio.create_task_group() as tg:

                async def flood() -> None:
                    flooded.append(await _flood(peer, stop))

                tg.start_soon(flood)
                async with HTTPClient(mcp_url(server)) as bystander:

                    async def call() -> None:
                        echoed = await bystander.invoke_tool("echo", {"message": "me too"})
                        assert echoed == "me too"

                    slowest = await slowest_call(call)
                stop.set()
    [answered] = flooded
    assert answered >= 2 * BATCH  # the flood really ran alongside
    assert slowest < PROMPT, f"a bystander's call took {slowest:.3f} s during the flood"
