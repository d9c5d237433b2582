"""Hostile messages on an open connection, against a real server on asyncio and trio.

Each case asserts the defined answer (a JSON-RPC error code or a close code);
:func:`hostile_server` then proves that a bystander and a fresh client are
still served promptly.
"""

from __future__ import annotations

import json
import socket
import struct
import zlib
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute

from securemcp.backends.server import Connection
from securemcp.protocol import Limits

from ..helpers import MASK, OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, client_frame, text_frame
from .conftest import (
    MemoryWatch,
    RawPeer,
    Server,
    hostile_server,
    send_chunked,
    upgrade_with,
)

MiB = 1024 * 1024


async def answer(peer: RawPeer) -> Any:
    opcode, payload = await peer.next_frame()
    assert opcode == OP_TEXT
    return json.loads(payload)


async def still_answers(peer: RawPeer) -> None:
    """The attacked connection itself still works (for faults that do not close it)."""
    await peer.stream.send(text_frame({"id": "after", "method": "ping"}))
    assert await answer(peer) == {"id": "after", "result": {"pong": True}}


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
read everything would hold all the answers: 10 MiB (pipelined requests), 8
MiB (pongs)."""


async def server_stops_reading(connection: Connection) -> None:
    """Return once the server has stopped reading ``connection``'s peer.

    Either the core paused (its unsent output reached ``max_pending_output``)
    or the connection is stuck writing to a peer that reads nothing. The
    backend reports neither through an event, so poll its state; "stuck"
    means a write in progress on ten polls in a row. When this returns makes
    no difference to the verdict (the peak is measured over the whole
    flood), only to how soon the peer starts reading.
    """
    stuck = 0
    while connection.driver.wants_read and stuck < 10:
        await anyio.sleep(0.005)
        stuck = stuck + 1 if not connection.reading() else 0


async def flood(
    server: Server, peer: RawPeer, data: bytes, answers: int, check: Any, *, whole: bool = False
) -> int:
    """Send ``data`` without reading until the server stops reading; then read every answer.

    Returns the peak memory growth until the server stopped reading: the time
    when a server without limits would have piled up answers (tracemalloc
    makes everything several times slower); with ``whole``, until the last
    answer was read, while the server catches up. ``check(opcode,
    payload, index)`` validates each of the ``answers`` frames.
    """
    async with anyio.create_task_group() as tg:
        with MemoryWatch() as memory:
            tg.start_soon(send_chunked, peer.stream, data)
            await server_stops_reading(server.connection_of(peer))
            growth = memory.peak_growth()
            # Now let the answers through at full speed: the tiny receive window
            # that made the peer fill up quickly would make reading crawl.
            raw = peer.stream.extra(SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            if not whole:
                memory.stop()
            for index in range(answers):
                opcode, payload = await peer.next_frame()
                check(opcode, payload, index)
            if whole:
                growth = memory.peak_growth()
    return growth


@pytest.mark.anyio
async def test_10_000_pipelined_requests_unread_keep_server_memory_bounded() -> None:
    size = 1024
    requests = b"".join(
        text_frame(
            {
                "id": n,
                "method": "invoke_tool",
                "params": {"tool_name": "blob", "params": {"size": size}},
            }
        )
        for n in range(10_000)
    )
    answered: set[int] = set()

    def check(opcode: int, payload: bytes, index: int) -> None:
        assert opcode == OP_TEXT
        reply = json.loads(payload)
        assert reply["result"] == "x" * size
        answered.add(reply["id"])

    async with (
        hostile_server(limits=FLOOD_LIMITS) as server,
        server.open_peer(rcvbuf=FLOOD_RCVBUF) as peer,
    ):
        growth = await flood(server, peer, requests, 10_000, check, whole=True)
        await still_answers(peer)
    # Every request was answered once the peer read: nothing was lost.
    assert answered == set(range(10_000))
    print(f"flood: peak growth {growth} bytes, bound {FLOOD_BOUND}")
    assert growth < FLOOD_BOUND, f"server grew by {growth} bytes, bound {FLOOD_BOUND}"


def ping_frames(count: int) -> bytes:
    """``count`` masked pings of 125 bytes (the most a control frame holds), numbered.

    Built from one masked template: masking byte by byte in Python would take
    seconds for the megabytes a flood needs.
    """
    template = client_frame(b"\x00" * 4 + b"p" * 121, OP_PING)
    head, counter_at = template[:6], len(template) - 125
    assert template[2:6] == MASK
    tail = template[counter_at + 4 :]
    mask = int.from_bytes(MASK, "big")
    return b"".join(head + (n ^ mask).to_bytes(4, "big") + tail for n in range(count))


@pytest.mark.anyio
async def test_ping_frame_flood_is_answered_with_bounded_memory() -> None:
    # 8 MiB of pongs: more than the kernel buffers of a loopback connection hold,
    # so the server must stop reading pings it cannot answer yet.
    count = 64_000

    def check(opcode: int, payload: bytes, index: int) -> None:
        assert opcode == OP_PONG
        assert payload == struct.pack("!I", index) + b"p" * 121

    async with (
        hostile_server(limits=FLOOD_LIMITS) as server,
        server.open_peer(rcvbuf=FLOOD_RCVBUF) as peer,
    ):
        growth = await flood(server, peer, ping_frames(count), count, check)
        await still_answers(peer)
    print(f"flood: peak growth {growth} bytes, bound {FLOOD_BOUND}")
    assert growth < FLOOD_BOUND, f"server grew by {growth} bytes, bound {FLOOD_BOUND}"


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
