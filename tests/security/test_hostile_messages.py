"""Hostile messages on an open connection, against a real server on asyncio and trio.

Each case asserts the defined answer (a JSON-RPC error code or a close code);
:func:`hostile_server` then proves that a bystander and a fresh client are
still served promptly. Malformed and oversized messages, fragment floods,
frame-level violations, a client vanishing mid-call, decompression bombs.
Floods of requests and pings nobody reads are in ``test_hostile_floods.py``.
"""

from __future__ import annotations

import json
import socket
import struct
import zlib

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from securemcp.protocol import Limits

from ..helpers import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, client_frame, text_frame
from .attacks import MiB, answer, malformed_requests, still_answers
from .conftest import MemoryWatch, hostile_server, send_chunked, upgrade_with


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "code"),
    malformed_requests(""),
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
async def test_a_frame_head_announcing_2_62_bytes_closes_1009_without_its_payload() -> None:
    # The head alone: a peer that then sends nothing is told at once, not left open.
    head = client_frame(b"", announced_length=2**62)
    async with hostile_server() as server, server.open_peer() as peer:
        await peer.stream.send(head)
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
