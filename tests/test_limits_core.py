"""The core's hard limits at their edge: exactly at the limit accepted, one over refused.

The validation of :class:`Limits`, fragments per message, and the handshake
head's size and header count; byte-exact frames, no sockets. The inflated size
of permessage-deflate messages is in ``test_limits_core_deflate.py``, its
negotiation in ``test_limits_core_deflate_offers.py``.
"""

from __future__ import annotations

import json
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
    ServerConnection,
)

from .helpers import (
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    UPGRADE_REQUEST,
    client_frame,
    close_payload,
    open_server,
    parse_server_messages,
    split_server_frames,
)
from .limits_helpers import PING, PONG, server_close

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
