"""Exact WebSocket frames in, exact frames out: framing, message limits and close codes."""

from __future__ import annotations

import json

import pytest

from securemcp import SecureMCP
from securemcp.protocol import ConnectionClosed, ConnectionState, Limits, PongReceived
from securemcp.protocol.output import LARGE

from .helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    client_frame,
    close_payload,
    demo_app,
    open_server,
    parse_server_messages,
    server_frame,
    split_server_frames,
)

LIMIT = 200


@pytest.fixture
def app() -> SecureMCP:
    return demo_app()


def ping_text(size: int, request_id: int = 1) -> bytes:
    """A ping request padded to exactly ``size`` bytes of UTF-8."""
    head, tail = f'{{"id":{request_id},"method":"ping","params":"'.encode(), b'"}'
    text = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(text) == size
    return text


def server_close(code: int, reason: str = "") -> bytes:
    return server_frame(close_payload(code, reason), OP_CLOSE)


PONG = {"id": 1, "result": {"pong": True}}


def test_single_frame_message_is_answered(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(b'{"id":1,"method":"ping"}'))
    assert server.data_to_send() == server_frame(b'{"id":1,"result":{"pong":true}}')


def test_fragmented_message_is_reassembled(app: SecureMCP) -> None:
    server = open_server(app)
    text = b'{"id":1,"method":"ping"}'
    server.receive_data(client_frame(text[:5], OP_TEXT, fin=False))
    server.receive_data(client_frame(text[5:12], OP_CONT, fin=False))
    assert server.data_to_send() == b""
    server.receive_data(client_frame(text[12:], OP_CONT))
    assert parse_server_messages(server.data_to_send()) == [PONG]


def test_control_frames_between_fragments(app: SecureMCP) -> None:
    server = open_server(app)
    text = b'{"id":1,"method":"ping"}'
    server.receive_data(
        client_frame(text[:10], OP_TEXT, fin=False)
        + client_frame(b"hb", OP_PING)
        + client_frame(text[10:], OP_CONT)
    )
    out = server.data_to_send()
    pong = server_frame(b"hb", OP_PONG)
    assert out.startswith(pong)
    assert parse_server_messages(out[len(pong) :]) == [PONG]


def test_frames_arriving_one_byte_at_a_time(app: SecureMCP) -> None:
    server = open_server(app)
    data = client_frame(b'{"id":1,"method":"ping"}') + client_frame(b'{"id":2,"method":"ping"}')
    for index in range(len(data)):
        server.receive_data(data[index : index + 1])
    assert parse_server_messages(server.data_to_send()) == [
        PONG,
        {"id": 2, "result": {"pong": True}},
    ]


def test_utf8_character_split_across_fragments(app: SecureMCP) -> None:
    server = open_server(app)
    text = '{"id":"é€","method":"ping"}'.encode()
    cut = text.index(b"\xe2") + 1  # inside the three bytes of the euro sign
    server.receive_data(
        client_frame(text[:cut], OP_TEXT, fin=False) + client_frame(text[cut:], OP_CONT)
    )
    assert parse_server_messages(server.data_to_send()) == [{"id": "é€", "result": {"pong": True}}]


# Message size


def test_message_exactly_at_the_limit_is_accepted(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_message_size=LIMIT))
    server.receive_data(client_frame(ping_text(LIMIT)))
    assert parse_server_messages(server.data_to_send()) == [{"id": 1, "result": {"pong": True}}]


def test_fragments_exactly_at_the_limit_are_accepted(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_message_size=LIMIT))
    text = ping_text(LIMIT)
    server.receive_data(
        client_frame(text[:100], OP_TEXT, fin=False) + client_frame(text[100:], OP_CONT)
    )
    assert parse_server_messages(server.data_to_send()) == [PONG]
    # The count starts again for the next message.
    server.receive_data(client_frame(ping_text(LIMIT, request_id=2)))
    assert parse_server_messages(server.data_to_send()) == [{"id": 2, "result": {"pong": True}}]


def test_one_byte_over_the_limit_closes_with_1009(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_message_size=LIMIT))
    server.receive_data(client_frame(ping_text(LIMIT + 1)))
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")
    assert server.state is ConnectionState.CLOSING
    assert server.events_received() == []
    server.receive_data(client_frame(close_payload(1009), OP_CLOSE))
    assert server.events_received() == [ConnectionClosed(1009, f"message exceeds {LIMIT} bytes")]
    assert server.data_to_send() == b""  # the peer answered our close: nothing to echo


def test_fragments_over_the_limit_are_not_buffered(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_message_size=LIMIT))
    text = ping_text(LIMIT + 1)
    server.receive_data(client_frame(text[:150], OP_TEXT, fin=False))
    assert server._messages.parts == [text[:150]]
    server.receive_data(client_frame(text[150:], OP_CONT, fin=False))
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")
    assert server._messages.parts == []
    # More of the same message, and further messages, are dropped, not buffered.
    server.receive_data(client_frame(b"x" * 50, OP_CONT, fin=False) + client_frame(b"}", OP_CONT))
    server.receive_data(client_frame(b'{"id":2,"method":"ping"}'))
    assert server._messages.parts == []
    assert server.data_to_send() == b""
    assert server.events_received() == []


@pytest.mark.parametrize("sent", [0, 1, LIMIT // 2], ids=["head-alone", "one-byte", "half"])
def test_a_frame_head_announcing_more_than_the_limit_closes_1009_at_once(
    app: SecureMCP, sent: int
) -> None:
    server = open_server(app, limits=Limits(max_message_size=LIMIT))
    # The header promises a terabyte: nothing of it is kept, whatever came with it.
    frame = client_frame(b"x" * (LIMIT + 10_001), announced_length=2**40)
    body_start = len(frame) - (LIMIT + 10_001)
    server.receive_data(frame[: body_start + sent])
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")
    assert server._messages.parts == []
    server.receive_data(frame[body_start + sent :])
    assert server._messages.parts == []
    assert server.data_to_send() == b""
    assert server.events_received() == []


def test_a_message_whose_frames_pass_the_limit_closes_as_they_do(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_message_size=LIMIT))
    # Each frame's head announces no more than the limit; together they pass it.
    first = client_frame(b"x" * LIMIT, fin=False)
    server.receive_data(first)
    assert server.data_to_send() == b""
    assert sum(map(len, server._messages.parts)) == LIMIT
    server.receive_data(client_frame(b"x", OP_CONT))
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")
    assert server._messages.parts == []


def test_limit_counts_utf8_bytes_not_characters(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_message_size=LIMIT))
    head = b'{"id":1,"method":"ping","params":"'
    room = LIMIT - len(head) - 2
    at_limit = head + "é".encode() * (room // 2) + b"x" * (room % 2) + b'"}'
    assert len(at_limit) == LIMIT
    server.receive_data(client_frame(at_limit))
    assert parse_server_messages(server.data_to_send()) == [PONG]
    over = head + "é".encode() * (room // 2) + b"x" * (room % 2 + 1) + b'"}'
    server.receive_data(client_frame(over))
    assert server.data_to_send() == server_close(1009, f"message exceeds {LIMIT} bytes")


# Frames the protocol refuses


def test_invalid_utf8_closes_with_1007(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(b'{"id":"\xff"}'))
    # A fixed phrase: no Python codec message on the wire.
    reason = "invalid UTF-8 in a text message"
    assert server.events_received() == [ConnectionClosed(1007, reason)]
    assert server.data_to_send() == server_close(1007, reason)
    assert server.state is ConnectionState.CLOSED


def test_binary_message_closes_with_1003(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(b"\x00\x01", OP_BINARY))
    assert server.data_to_send() == server_close(1003, "binary messages are not supported")
    server.receive_data(client_frame(close_payload(1003), OP_CLOSE))
    assert server.events_received() == [ConnectionClosed(1003, "binary messages are not supported")]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        pytest.param(client_frame(b"x", 0x3), "Invalid opcode 0x3", id="reserved-data-opcode"),
        pytest.param(client_frame(b"x", 0xB), "Invalid opcode 0xb", id="reserved-control-opcode"),
        pytest.param(
            client_frame(b'{"id":1}', masked=False),
            "server received unexpected unmasked frame",
            id="unmasked",
        ),
        pytest.param(
            client_frame(b"x", rsv=0b100), "Reserved bit set unexpectedly", id="rsv1-no-extension"
        ),
        pytest.param(
            client_frame(b"x", OP_CONT), "unexpected CONTINUATION", id="orphan-continuation"
        ),
        pytest.param(
            client_frame(b"x", OP_PING, fin=False),
            "Invalid attempt to fragment control frame",
            id="fragmented-control",
        ),
        pytest.param(
            client_frame(b"x" * 126, OP_PING),
            "Control frame with payload len > 125",
            id="control-too-long",
        ),
        pytest.param(
            client_frame(close_payload(1006), OP_CLOSE),
            "CLOSE with invalid code 1006",
            id="close-code-never-on-the-wire",
        ),
        pytest.param(
            client_frame(close_payload(999), OP_CLOSE),
            "CLOSE with invalid code 999",
            id="close-999",
        ),
        pytest.param(
            client_frame(b"\x03", OP_CLOSE), "CLOSE with 1 byte payload", id="close-one-byte"
        ),
    ],
)
def test_protocol_violations_close_with_1002(app: SecureMCP, frame: bytes, reason: str) -> None:
    server = open_server(app)
    server.receive_data(frame)
    assert server.events_received() == [ConnectionClosed(1002, reason)]
    assert server.data_to_send() == server_close(1002, reason)
    assert server.state is ConnectionState.CLOSED
    assert not server.wants_read


def test_text_frame_interrupting_a_fragmented_message_is_1002(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(b"[", OP_TEXT, fin=False) + client_frame(b"1", OP_TEXT))
    reason = "expected CONTINUATION, got TEXT"
    assert server.events_received() == [ConnectionClosed(1002, reason)]
    assert server.data_to_send() == server_close(1002, reason)


def test_nothing_after_the_peer_close_is_read_even_when_input_was_held(app: SecureMCP) -> None:
    # A close and junk in one read, behind output at its limit: resuming the
    # held input must not parse the junk (found by the fuzz suite).
    server = open_server(app, limits=Limits(max_pending_output=1))
    server.receive_data(
        client_frame(b'{"id":1,"method":"ping"}')
        + client_frame(close_payload(1000), OP_CLOSE)
        + b"\x00\x00"
    )
    assert server.events_received() == []
    out = server.data_to_send()
    assert server.events_received() == [ConnectionClosed(1000, "")]
    assert split_server_frames(out + server.data_to_send())[-1] == (OP_CLOSE, close_payload(1000))
    assert server.data_to_send() == b""
    assert server.events_received() == []


def test_violation_while_our_close_is_pending_ends_without_another_close(app: SecureMCP) -> None:
    server = open_server(app)
    server.close(1001, "bye")
    assert server.data_to_send() == server_close(1001, "bye")
    server.receive_data(client_frame(b"x", 0x3))
    assert server.events_received() == [ConnectionClosed(1002, "Invalid opcode 0x3")]
    assert server.data_to_send() == b""


# Control frames


def test_ping_gets_the_exact_pong(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(b"hello", OP_PING))
    assert server.data_to_send() == b"\x8a\x05hello"
    server.receive_data(client_frame(b"", OP_PING))
    assert server.data_to_send() == b"\x8a\x00"
    assert server.events_received() == []


def test_pong_becomes_an_event(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(b"beat", OP_PONG))
    assert server.events_received() == [PongReceived(b"beat")]
    assert server.data_to_send() == b""


def test_server_ping_bytes(app: SecureMCP) -> None:
    server = open_server(app)
    server.ping(b"k")
    assert server.data_to_send() == b"\x89\x01k"


def test_peer_close_is_echoed(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(close_payload(1000, "bye"), OP_CLOSE))
    assert server.data_to_send() == server_close(1000, "bye")
    assert server.events_received() == [ConnectionClosed(1000, "bye")]
    assert server.state is ConnectionState.CLOSED


def test_peer_close_without_a_code(app: SecureMCP) -> None:
    server = open_server(app)
    server.receive_data(client_frame(b"", OP_CLOSE))
    assert server.data_to_send() == server_frame(b"", OP_CLOSE)
    assert server.events_received() == [ConnectionClosed(1005)]


def test_our_close_keeps_our_code_when_the_peer_answers_differently(app: SecureMCP) -> None:
    server = open_server(app)
    server.close(4001, "policy")
    assert server.data_to_send() == server_close(4001, "policy")
    assert server.close_expected()
    server.receive_data(client_frame(close_payload(1000, "ok"), OP_CLOSE))
    assert server.events_received() == [ConnectionClosed(4001, "policy")]
    assert server.data_to_send() == b""


def test_messages_after_our_close_are_ignored(app: SecureMCP) -> None:
    server = open_server(app)
    server.close()
    server.data_to_send()
    server.receive_data(
        client_frame(b'{"id":1,"method":"ping"}')
        + client_frame(b"p", OP_PING)
        + client_frame(b"\x00", OP_BINARY)
    )
    assert server.data_to_send() == b""
    assert server.events_received() == []


def test_large_answers_come_as_chunks_that_are_not_copied(app: SecureMCP) -> None:
    # Two answers in one batch: a small one, then one past LARGE.
    server = open_server(app)
    big = "x" * LARGE
    server.receive_data(
        client_frame(b'{"id":1,"method":"ping"}')
        + client_frame(json.dumps({"id": 2, "method": big}).encode())
        + client_frame(b'{"id":3,"method":"ping"}')
    )
    chunks = server.data_to_send_chunks()
    assert server.data_to_send_chunks() == []  # drained
    joined = b"".join(chunks)
    answers = parse_server_messages(joined)
    assert [answer["id"] for answer in answers] == [1, 2, 3]
    # Small pieces are joined; the large error answer (it quotes the method) stays
    # whole, never copied into a bigger buffer.
    assert all(len(chunk) >= LARGE for chunk in chunks[1:-1])
    assert len(chunks) == 3
    assert chunks[0].startswith(server_frame(b"")[:1])


def test_data_to_send_and_its_chunks_write_the_same_bytes(app: SecureMCP) -> None:
    first, second = open_server(app), open_server(app)
    requests = b"".join(
        client_frame(json.dumps({"id": n, "method": "x" * (n * 40_000)}).encode()) for n in range(4)
    )
    first.receive_data(requests)
    second.receive_data(requests)
    assert b"".join(second.data_to_send_chunks()) == first.data_to_send()
