"""permessage-deflate's negotiation in the core: off by default, offers answered or declined.

Negotiated only when enabled and offered (RFC 7692; malformed offers declined,
never raised), context takeover kept across messages unless either side asks
for none, and the core client and server compressing both ways. Byte-exact
frames, no sockets.
"""

from __future__ import annotations

import json
import zlib

import pytest

from securemcp import SecureMCP
from securemcp.protocol import Limits, ResponseReceived, ToolCall

from .helpers import (
    OP_TEXT,
    ConnectionPair,
    client_frame,
    demo_app,
    open_server,
    parse_server_messages,
    run_tool,
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
)

# permessage-deflate


def first_byte_flags(data: bytes) -> int:
    return data[0] & 0x70


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


def test_context_takeover_across_messages(app: SecureMCP) -> None:
    # The client's compressor keeps its window: the second message refers to the first.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    server, _ = open_deflate_server(app, DEFLATE)
    for _ in range(3):
        body = compressor.compress(ping_text(LIMIT)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        server.receive_data(client_frame(body[:-4], rsv=RSV1))
    assert inflate_server_messages(server.data_to_send()) == [PONG] * 3


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
