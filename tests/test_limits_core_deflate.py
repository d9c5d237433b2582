"""permessage-deflate's bounds and errors in the core: what a compressed message may cost.

A message inflating to exactly ``max_message_size`` is answered, one byte over
closes 1009, also across fragments and for decompression bombs (inflating at
most the limit + 1 byte); corrupt data, fragments after the stream's end, the
compressed bit where it cannot be; each message counted afresh. Byte-exact
frames, no sockets.
"""

from __future__ import annotations

import tracemalloc

import pytest

from securemcp import SecureMCP
from securemcp.protocol import ConnectionClosed, ConnectionState, Limits

from .helpers import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ConnectionPair,
    client_frame,
    demo_app,
    server_frame,
)
from .limits_helpers import (
    DEFLATE,
    LIMIT,
    PING,
    PONG,
    RSV1,
    close_code,
    compress,
    inflate_server_messages,
    open_deflate_server,
    ping_text,
    server_close,
)


def test_inflating_to_exactly_the_limit_is_accepted(app: SecureMCP) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    body = compress(ping_text(LIMIT))
    assert len(body) < 100
    server.receive_data(client_frame(body, rsv=RSV1))
    assert inflate_server_messages(server.data_to_send()) == [PONG]
    assert server.state is ConnectionState.OPEN


def test_inflating_one_byte_over_the_limit_closes_with_1009(app: SecureMCP) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(client_frame(compress(ping_text(LIMIT + 1)), rsv=RSV1))
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")
    assert server.events_received() == [ConnectionClosed(1009, f"message exceeds {LIMIT} bytes")]
    assert server.state is ConnectionState.CLOSED


def test_fragmented_compressed_message_is_bounded_across_fragments(app: SecureMCP) -> None:
    body = compress(ping_text(LIMIT))
    server, _ = open_deflate_server(app, DEFLATE)
    frames = client_frame(body[:10], OP_TEXT, fin=False, rsv=RSV1)
    frames += client_frame(b"hb", OP_PING)  # a control frame between fragments
    frames += client_frame(body[10:], OP_CONT)
    server.receive_data(frames)
    out = server.data_to_send()
    pong = server_frame(b"hb", OP_PONG)
    assert out.startswith(pong)
    assert inflate_server_messages(out[len(pong) :]) == [PONG]
    # One byte over, fragmented the same way:
    body = compress(ping_text(LIMIT + 1))
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(
        client_frame(body[:10], OP_TEXT, fin=False, rsv=RSV1) + client_frame(body[10:], OP_CONT)
    )
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")


def test_decompression_bomb_closes_1009_without_inflating_it(app: SecureMCP) -> None:
    bomb = compress(b"[" + b"0," * (5 * 1024 * 1024))  # 10 MiB of text
    assert len(bomb) < 20_000
    limit = 64 * 1024
    server, _ = open_deflate_server(app, Limits(max_message_size=limit, permessage_deflate=True))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for index in range(0, len(bomb), 4096):
            server.receive_data((client_frame(bomb, rsv=RSV1))[index : index + 4096])
            if server.state is not ConnectionState.OPEN:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.data_to_send() == server_close(1009, f"message exceeds {limit} bytes")
    # The limit, plus the copies wsproto and the UTF-8 decoder make of it: never 10 MiB.
    assert peak < 6 * limit, peak


def test_bomb_in_a_fragmented_message_stops_at_the_limit(app: SecureMCP) -> None:
    bomb = compress(b"0" * (10 * 1024 * 1024))
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(client_frame(bomb[:8], OP_TEXT, fin=False, rsv=RSV1))
    server.receive_data(client_frame(bomb[8:], OP_CONT))
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xff\xff\xff", 1007),  # not deflate data
        (compress(PING, final=True) + b"trailing", 1007),  # bytes after the stream's end
        (compress(b"\xff\xfe"), 1007),  # inflates to invalid UTF-8
    ],
)
def test_corrupt_compressed_data_closes(app: SecureMCP, payload: bytes, code: int) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(client_frame(payload, rsv=RSV1))
    assert close_code(server.data_to_send()) == code


def test_a_stream_ended_by_the_sender_restarts_with_the_next_message(app: SecureMCP) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(
        client_frame(compress(PING, final=True), rsv=RSV1) + client_frame(compress(PING), rsv=RSV1)
    )
    assert inflate_server_messages(server.data_to_send()) == [PONG, PONG]


def test_a_fragment_after_the_end_of_the_stream_closes_1007(app: SecureMCP) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    body = compress(PING, final=True)
    server.receive_data(
        client_frame(body, OP_TEXT, fin=False, rsv=RSV1)
        + client_frame(b"", OP_CONT, fin=False)  # nothing more: harmless
        + client_frame(b"junk", OP_CONT)
    )
    assert close_code(server.data_to_send()) == 1007


@pytest.mark.parametrize(
    "frame",
    [
        client_frame(b"", OP_PING, rsv=RSV1),
        client_frame(b"x", OP_TEXT, fin=False) + client_frame(b"y", OP_CONT, rsv=RSV1),
    ],
)
def test_compressed_bit_where_it_cannot_be_is_1002(app: SecureMCP, frame: bytes) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(frame)
    assert close_code(server.data_to_send()) == 1002


def test_compressed_binary_message_is_still_1003(app: SecureMCP) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(client_frame(compress(b"\x00\x01"), OP_BINARY, rsv=RSV1))
    assert server.data_to_send() == server_close(1003, "binary messages are not supported")


def test_core_client_bounds_what_it_inflates() -> None:
    pair = ConnectionPair(
        demo_app(),
        limits=Limits(permessage_deflate=True),
        client_limits=Limits(max_message_size=500, permessage_deflate=True),
    )
    pair.open(welcome=False)
    pair.take_client_events()
    request_id = pair.client.invoke_tool("echo", {"message": "z" * 600})
    pair.pump()
    pair.answer_all()
    [closed] = pair.take_client_events()
    assert closed == ConnectionClosed(1009, "message exceeds 500 bytes", (request_id,))


def test_the_extension_counts_each_message_afresh(app: SecureMCP) -> None:
    # The inflated size is counted per message: messages inflating to exactly
    # the limit follow one another, four times the limit in all...
    server, _ = open_deflate_server(app, DEFLATE)
    at_limit = compress(ping_text(LIMIT))
    server.receive_data(client_frame(at_limit, rsv=RSV1) * 3)
    # ...one of them in two fragments,
    server.receive_data(
        client_frame(at_limit[:10], OP_TEXT, fin=False, rsv=RSV1)
        + client_frame(at_limit[10:], OP_CONT)
    )
    assert inflate_server_messages(server.data_to_send()) == [PONG] * 4
    # while one byte over the limit, after them, is refused.
    server.receive_data(client_frame(compress(ping_text(LIMIT + 1)), rsv=RSV1))
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")
    assert server.events_received() == [ConnectionClosed(1009, f"message exceeds {LIMIT} bytes")]
