"""The core's hard limits at their edge: exactly at the limit accepted, one over refused.

Fragments per message, the handshake head's size and header count, and the
inflated size of permessage-deflate messages; byte-exact frames, no sockets.
"""

from __future__ import annotations

import json
import tracemalloc
import zlib
from typing import Any

import pytest

from securemcp import SecureMCP
from securemcp.protocol import (
    ClientConnection,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionState,
    HandshakeRequest,
    Limits,
    ResponseReceived,
    ServerConnection,
    ToolCall,
)

from .helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    UPGRADE_REQUEST,
    ConnectionPair,
    client_frame,
    close_payload,
    demo_app,
    open_server,
    parse_server_messages,
    run_tool,
    server_frame,
    split_server_frames,
)

PING = b'{"id":1,"method":"ping"}'
PONG = {"id": 1, "result": {"pong": True}}
RSV1 = 0b100
"""The "compressed" bit of a frame's first byte, as client_frame's ``rsv`` takes it."""


@pytest.fixture
def app() -> SecureMCP:
    return demo_app()


def server_close(code: int, reason: str = "") -> bytes:
    return server_frame(close_payload(code, reason), OP_CLOSE)


def close_code(data: bytes) -> int:
    """The code of the close frame that is all of ``data``."""
    [(opcode, payload)] = split_server_frames(data)
    assert opcode == OP_CLOSE
    return int.from_bytes(payload[:2], "big")


def ping_text(size: int) -> bytes:
    """A ping request padded to exactly ``size`` bytes."""
    head, tail = b'{"id":1,"method":"ping","params":"', b'"}'
    text = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(text) == size
    return text


# Limits validation


@pytest.mark.parametrize(
    "options",
    [
        {"max_fragments": 0},
        {"max_fragments": True},
        {"max_handshake_size": 0},
        {"max_handshake_size": 16 * 1024 + 1},
        {"max_header_count": -1},
        {"max_header_count": 2.5},
        {"permessage_deflate": 1},
    ],
)
def test_invalid_limits_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Limits"):
        Limits(**options)


def test_defaults_are_the_documented_ones() -> None:
    limits = Limits()
    assert limits.max_fragments == 1024
    assert limits.max_handshake_size == 16 * 1024
    assert limits.max_header_count == 64
    assert limits.permessage_deflate is False


# Fragments per message


def fragmented(text: bytes, count: int) -> bytes:
    """``text`` as ``count`` frames: the first ``count - 1`` empty, then the whole text."""
    assert count >= 2
    frames = [client_frame(b"", OP_TEXT, fin=False)]
    frames += [client_frame(b"", OP_CONT, fin=False)] * (count - 2)
    frames.append(client_frame(text, OP_CONT))
    return b"".join(frames)


def test_message_in_exactly_max_fragments_frames_is_answered(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_fragments=10))
    server.receive_data(fragmented(PING, 10))
    assert parse_server_messages(server.data_to_send()) == [PONG]
    # The count starts again with the next message.
    server.receive_data(fragmented(PING, 10))
    assert parse_server_messages(server.data_to_send()) == [PONG]


def test_one_fragment_over_closes_with_1009(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_fragments=10))
    server.receive_data(fragmented(PING, 11))
    assert server.data_to_send() == server_close(1009, "message has more than 10 fragments")
    assert server.state is ConnectionState.CLOSING
    server.receive_data(client_frame(close_payload(1009), OP_CLOSE))
    assert server.events_received() == [
        ConnectionClosed(1009, "message has more than 10 fragments")
    ]


def test_fragments_are_refused_as_soon_as_the_count_is_reached(app: SecureMCP) -> None:
    # The tenth frame ends without finishing the message: no need to wait for an eleventh.
    server = open_server(app, limits=Limits(max_fragments=10))
    server.receive_data(fragmented(PING, 11)[: -len(client_frame(PING, OP_CONT))])
    assert server.data_to_send() == server_close(1009, "message has more than 10 fragments")


def test_a_single_frame_is_all_max_fragments_1_allows(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_fragments=1))
    server.receive_data(client_frame(PING))
    assert parse_server_messages(server.data_to_send()) == [PONG]
    server.receive_data(client_frame(PING[:5], OP_TEXT, fin=False))
    assert server.data_to_send() == server_close(1009, "message has more than 1 fragments")


def test_control_frames_between_fragments_are_not_fragments(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_fragments=2))
    server.receive_data(
        client_frame(PING[:5], OP_TEXT, fin=False)
        + client_frame(b"a", OP_PING) * 5
        + client_frame(PING[5:], OP_CONT)
    )
    out = split_server_frames(server.data_to_send())
    assert out[:5] == [(OP_PONG, b"a")] * 5
    assert [json.loads(payload) for _, payload in out[5:]] == [PONG]


def test_a_frame_arriving_in_pieces_counts_once(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_fragments=2))
    data = client_frame(PING[:10], OP_TEXT, fin=False) + client_frame(PING[10:], OP_CONT)
    for index in range(len(data)):
        server.receive_data(data[index : index + 1])
    assert parse_server_messages(server.data_to_send()) == [PONG]


# Handshake head: size and header count


def upgrade_request(size: int | None = None, headers: int = 0) -> bytes:
    """The minimal upgrade plus ``headers`` more headers, padded to ``size`` bytes if given."""
    extra = b"".join(b"X-H%d: v\r\n" % index for index in range(headers))
    head = UPGRADE_REQUEST[:-2] + extra
    if size is not None:
        padding = size - len(head) - len(b"X-Pad: \r\n\r\n")
        assert padding >= 0
        head += b"X-Pad: " + b"p" * padding + b"\r\n"
    head += b"\r\n"
    assert size is None or len(head) == size
    return head


BASE_HEADERS = UPGRADE_REQUEST.count(b"\r\n") - 2


def handshake_outcome(server: ServerConnection, data: bytes, *, piecewise: bool = False) -> Any:
    if piecewise:
        for index in range(0, len(data), 7):
            server.receive_data(data[index : index + 7])
    else:
        server.receive_data(data)
    events = server.events_received()
    if events:
        [request] = events
        assert isinstance(request, HandshakeRequest)
        return request
    return server.data_to_send()


@pytest.mark.parametrize("piecewise", [False, True])
def test_head_of_exactly_max_handshake_size_is_accepted(app: SecureMCP, piecewise: bool) -> None:
    server = ServerConnection(app, limits=Limits(max_handshake_size=1000))
    request = handshake_outcome(server, upgrade_request(1000), piecewise=piecewise)
    assert isinstance(request, HandshakeRequest)
    server.accept()
    assert server.data_to_send().startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize("piecewise", [False, True])
def test_head_one_byte_over_gets_431(app: SecureMCP, piecewise: bool) -> None:
    server = ServerConnection(app, limits=Limits(max_handshake_size=1000))
    answer = handshake_outcome(server, upgrade_request(1001), piecewise=piecewise)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b"Request Header Fields Too Large: handshake exceeds 1000 bytes\n")
    assert server.state is ConnectionState.CLOSED


def test_endless_head_is_refused_once_the_limit_is_passed(app: SecureMCP) -> None:
    server = ServerConnection(app, limits=Limits(max_handshake_size=1000))
    server.receive_data(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 900)
    assert server.data_to_send() == b""
    server.receive_data(b"a" * 200)
    assert server.data_to_send().startswith(b"HTTP/1.1 431 ")
    server.receive_data(b"a" * 100_000)  # ignored: the connection is over
    assert server.data_to_send() == b""


def test_bytes_after_the_head_do_not_count(app: SecureMCP) -> None:
    # A client must wait for the 101 before sending frames (RFC 6455 §4.1); one
    # that does not still has its head judged on the head alone.
    head = upgrade_request(1000)
    server = ServerConnection(app, limits=Limits(max_handshake_size=1000))
    server.receive_data(head + client_frame(PING) * 100)
    assert isinstance(server.events_received()[0], HandshakeRequest)
    server.accept(welcome=False)
    assert server.data_to_send().startswith(b"HTTP/1.1 101 ")
    server.receive_data(client_frame(PING))
    assert parse_server_messages(server.data_to_send()) == [PONG]


def test_the_default_head_limit_is_16_kib(app: SecureMCP) -> None:
    server = ServerConnection(app)
    assert isinstance(handshake_outcome(server, upgrade_request(16 * 1024)), HandshakeRequest)
    server = ServerConnection(app)
    assert handshake_outcome(server, upgrade_request(16 * 1024 + 1)).startswith(b"HTTP/1.1 431 ")


def test_exactly_max_header_count_headers_are_accepted(app: SecureMCP) -> None:
    server = ServerConnection(app, limits=Limits(max_header_count=20))
    request = handshake_outcome(server, upgrade_request(headers=20 - BASE_HEADERS))
    assert isinstance(request, HandshakeRequest)


@pytest.mark.parametrize("piecewise", [False, True])
def test_one_header_over_gets_431(app: SecureMCP, piecewise: bool) -> None:
    server = ServerConnection(app, limits=Limits(max_header_count=20))
    answer = handshake_outcome(
        server, upgrade_request(headers=21 - BASE_HEADERS), piecewise=piecewise
    )
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b"handshake has more than 20 headers\n")


def test_bare_line_feeds_count_as_h11_counts_them(app: SecureMCP) -> None:
    head = upgrade_request(headers=20 - BASE_HEADERS).replace(b"\r\n", b"\n")
    server = ServerConnection(app, limits=Limits(max_header_count=20))
    assert isinstance(handshake_outcome(server, head, piecewise=True), HandshakeRequest)
    server = ServerConnection(app, limits=Limits(max_header_count=19))
    assert handshake_outcome(server, head, piecewise=True).startswith(b"HTTP/1.1 431 ")


def test_client_refuses_an_oversized_response_head() -> None:
    client = ClientConnection(limits=Limits(max_handshake_size=200))
    client.connect("localhost", "/")
    client.data_to_send()
    client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: " + b"p" * 300)
    [rejected] = client.events_received()
    assert isinstance(rejected, ConnectionRejected)
    assert rejected.status_code == 0
    assert b"exceeds 200 bytes" in rejected.body
    assert client.state is ConnectionState.CLOSED


# permessage-deflate


def deflate_request(offer: str = "permessage-deflate") -> bytes:
    return UPGRADE_REQUEST[:-2] + f"Sec-WebSocket-Extensions: {offer}\r\n\r\n".encode()


def open_deflate_server(
    app: SecureMCP, limits: Limits, offer: str = "permessage-deflate"
) -> tuple[ServerConnection, bytes]:
    """A server past the handshake; returns it and its 101 response head."""
    server = ServerConnection(app, limits=limits)
    server.receive_data(deflate_request(offer))
    [request] = server.events_received()
    assert isinstance(request, HandshakeRequest)
    server.accept(welcome=False)
    return server, server.data_to_send()


def compress(data: bytes, *, final: bool = False) -> bytes:
    """``data`` as one permessage-deflate message body (sync-flushed, tail removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    if final:
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate_server_messages(data: bytes) -> list[Any]:
    decompressor = zlib.decompressobj(-15)
    messages = []
    for opcode, payload in split_server_frames(data):
        assert opcode == OP_TEXT
        messages.append(json.loads(decompressor.decompress(payload + b"\x00\x00\xff\xff")))
    return messages


def first_byte_flags(data: bytes) -> int:
    return data[0] & 0x70


LIMIT = 1000
DEFLATE = Limits(max_message_size=LIMIT, permessage_deflate=True)


def test_deflate_is_off_by_default(app: SecureMCP) -> None:
    server, head = open_deflate_server(app, Limits())
    assert b"sec-websocket-extensions" not in head.lower()
    # A compressed frame on a connection without the extension is a protocol error.
    server.receive_data(client_frame(compress(PING), rsv=RSV1))
    assert close_code(server.data_to_send()) == 1002


def test_deflate_is_negotiated_when_enabled_and_offered(app: SecureMCP) -> None:
    server, head = open_deflate_server(app, DEFLATE)
    assert b"Sec-WebSocket-Extensions: permessage-deflate\r\n" in head
    server.receive_data(client_frame(compress(PING), rsv=RSV1))
    out = server.data_to_send()
    assert first_byte_flags(out) == 0x40  # our answer is compressed too
    assert inflate_server_messages(out) == [PONG]


def test_deflate_is_not_offered_to_a_client_that_did_not_ask(app: SecureMCP) -> None:
    server = open_server(app, limits=DEFLATE)
    server.receive_data(client_frame(PING))
    assert parse_server_messages(server.data_to_send()) == [PONG]


def test_uncompressed_messages_still_flow_with_deflate_on(app: SecureMCP) -> None:
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(client_frame(PING) + client_frame(compress(PING), rsv=RSV1))
    assert inflate_server_messages(server.data_to_send()) == [PONG, PONG]


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


def test_context_takeover_across_messages(app: SecureMCP) -> None:
    # The client's compressor keeps its window: the second message refers to the first.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    server, _ = open_deflate_server(app, DEFLATE)
    for _ in range(3):
        body = compressor.compress(ping_text(LIMIT)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        server.receive_data(client_frame(body[:-4], rsv=RSV1))
    assert inflate_server_messages(server.data_to_send()) == [PONG] * 3


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


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ),
        (
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=12",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            'permessage-deflate; server_max_window_bits="9"',
            "permessage-deflate; server_max_window_bits=9",
        ),
        # Declined offers: unknown, repeated, missing or out-of-range parameters.
        ("permessage-deflate; foo", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; client_max_window_bits=16", None),
        ("permessage-deflate; client_max_window_bits=abc", None),
        ("permessage-deflate; server_max_window_bits=1e1", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("x-webkit-deflate-frame", None),
        # Several offers: the first acceptable one wins.
        (
            "permessage-deflate; foo, permessage-deflate; server_max_window_bits=10, "
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=10",
        ),
    ],
)
def test_offers_are_answered_or_declined_never_raised(
    app: SecureMCP, offer: str, answer: str | None
) -> None:
    _, head = open_deflate_server(app, DEFLATE, offer)
    lines = [line for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-ext")]
    if answer is None:
        assert lines == []
    else:
        assert lines == [b"Sec-WebSocket-Extensions: " + answer.encode()]


def compressed_payloads(data: bytes) -> list[bytes]:
    """The payloads of the server's frames in ``data``, each a whole compressed text message.

    Every frame must be a final text frame with RSV1 (the permessage-deflate
    "compressed" bit) set: first byte 0xC1.
    """
    payloads = []
    while data:
        assert data[0] == 0x80 | RSV1 << 4 | OP_TEXT, f"a frame starts with {data[0]:#04x}"
        length, offset = data[1], 2
        assert length < 126, "the test's messages are short"
        payloads.append(data[offset : offset + length])
        data = data[offset + length :]
    return payloads


def test_server_no_context_takeover_restarts_our_compressor(app: SecureMCP) -> None:
    # The client says it keeps no window between our messages: each must
    # inflate on its own, with a fresh inflater.
    server, _ = open_deflate_server(app, DEFLATE, "permessage-deflate; server_no_context_takeover")
    server.receive_data(client_frame(PING) * 2)
    payloads = compressed_payloads(server.data_to_send())
    assert len(payloads) == 2
    for payload in payloads:
        assert json.loads(zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")) == PONG
    # A restarted compressor makes the same bytes of the same message.
    assert payloads[0] == payloads[1]
    # With context takeover (the default), the second answer refers back to
    # the first: shorter, and meaningless to a fresh inflater.
    server, _ = open_deflate_server(app, DEFLATE)
    server.receive_data(client_frame(PING) * 2)
    first, second = compressed_payloads(server.data_to_send())
    assert first == payloads[0]
    assert len(second) < len(first)
    with pytest.raises(zlib.error):
        zlib.decompressobj(-15).decompress(second + b"\x00\x00\xff\xff")
    assert inflate_server_messages(server_frame(first) + server_frame(second)) == [PONG, PONG]


def test_client_no_context_takeover_restarts_our_inflater(app: SecureMCP) -> None:
    server, _ = open_deflate_server(app, DEFLATE, "permessage-deflate; client_no_context_takeover")
    server.receive_data(client_frame(compress(PING), rsv=RSV1) * 2)
    assert inflate_server_messages(server.data_to_send()) == [PONG, PONG]
    # The inflater forgets each message's window: a second message that refers
    # back to the first (as test_context_takeover_across_messages's do, where
    # that is allowed) is corrupt data here.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    server, _ = open_deflate_server(app, DEFLATE, "permessage-deflate; client_no_context_takeover")
    for _ in range(2):
        body = compressor.compress(PING) + compressor.flush(zlib.Z_SYNC_FLUSH)
        server.receive_data(client_frame(body[:-4], rsv=RSV1))
    out = server.data_to_send()
    [first] = compressed_payloads(out[: 2 + out[1]])  # the first answer: one short frame
    assert json.loads(zlib.decompressobj(-15).decompress(first + b"\x00\x00\xff\xff")) == PONG
    assert close_code(out[2 + out[1] :]) == 1007


def test_core_client_and_server_negotiate_deflate_both_ways() -> None:
    pair = ConnectionPair(demo_app(), limits=DEFLATE, client_limits=DEFLATE)
    pair.open(welcome=False)
    pair.take_client_events()
    request_id = pair.client.invoke_tool("echo", {"message": "z" * 600})
    request = pair.client.data_to_send()
    assert first_byte_flags(request) == 0x40
    assert len(request) < 100
    pair.server.receive_data(request)
    [call] = pair.server.events_received()
    assert isinstance(call, ToolCall)
    pair.server.complete(call, run_tool(call))
    answer = pair.server.data_to_send()
    assert first_byte_flags(answer) == 0x40
    assert len(answer) < 100
    pair.client.receive_data(answer)
    assert pair.client.events_received() == [ResponseReceived(request_id, {"echoed": "z" * 600})]


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
