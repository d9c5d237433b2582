"""The client core: handshake, ids, answer correlation, and what it does with odd servers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from securemcp import LocalProtocolError
from securemcp.protocol import (
    ClientConnection,
    Connected,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionState,
    ErrorReceived,
    NotificationReceived,
    PongReceived,
    ResponseReceived,
    Welcome,
)

from .helpers import OP_TEXT, ConnectionPair, demo_app, server_frame


def accept_bytes(client: ClientConnection, extra: bytes = b"") -> bytes:
    """The 101 answer a server would give to ``client``'s handshake."""
    pair = ConnectionPair(demo_app())
    pair.server.receive_data(client.data_to_send())
    pair.server.events_received()
    pair.server.accept(welcome=False)
    return pair.server.data_to_send() + extra


def open_client() -> ClientConnection:
    client = ClientConnection()
    client.connect("localhost", "/")
    client.receive_data(accept_bytes(client))
    assert [type(e) for e in client.events_received()] == [Connected]
    return client


def from_server(client: ClientConnection, *messages: Any) -> list[Any]:
    """Deliver ``messages`` to ``client`` as server text frames; return its events."""
    for message in messages:
        text = message if isinstance(message, str) else json.dumps(message)
        client.receive_data(server_frame(text.encode(), OP_TEXT))
    return client.events_received()


@pytest.fixture
def pair() -> ConnectionPair:
    pair = ConnectionPair(demo_app())
    pair.open()
    pair.take_client_events()
    return pair


def test_request_ids_are_unique_and_pending_until_answered(pair: ConnectionPair) -> None:
    ids = [pair.client.send_request("ping") for _ in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert pair.client.pending == frozenset(ids)
    pair.pump()
    assert pair.client.pending == frozenset()
    assert pair.take_client_events() == [ResponseReceived(i, {"pong": True}) for i in ids]


def test_request_without_params_sends_no_params_member() -> None:
    client = open_client()
    client.send_request("ping")
    client.notify("tick")
    frames = client.data_to_send()
    assert b'"params"' not in _unmask_all(frames)


def test_out_of_order_answers_are_correlated() -> None:
    client = open_client()
    first, second = client.send_request("a"), client.send_request("b")
    events = from_server(client, {"id": second, "result": "B"}, {"id": first, "result": "A"})
    assert events == [ResponseReceived(second, "B"), ResponseReceived(first, "A")]


def test_unknown_and_repeated_ids_are_dropped() -> None:
    client = open_client()
    request_id = client.send_request("a")
    events = from_server(
        client,
        {"id": 999, "result": "stray"},
        {"id": "1", "result": "wrong type"},
        {"id": request_id, "result": "ok"},
        {"id": request_id, "result": "again"},
    )
    assert events == [ResponseReceived(request_id, "ok")]


def test_forget_drops_a_late_answer() -> None:
    client = open_client()
    request_id = client.send_request("slow")
    client.forget(request_id)
    client.forget(12345)  # unknown ids are fine
    assert client.pending == frozenset()
    assert from_server(client, {"id": request_id, "result": "late"}) == []


def test_welcome_becomes_an_event() -> None:
    client = open_client()
    assert from_server(
        client, {"id": "welcome", "result": {"message": "Hi", "tools": ["a", 1]}}
    ) == [Welcome("Hi", ("a", "1"))]
    assert from_server(client, {"id": "welcome", "result": {}}) == [Welcome("", ())]
    assert from_server(client, {"id": "welcome", "result": "not an object"}) == []


def test_error_answers() -> None:
    client = open_client()
    ids = [client.send_request("m") for _ in range(4)]
    events = from_server(
        client,
        {"id": ids[0], "error": {"code": -32601, "message": "Unknown method: m", "data": [1]}},
        {"id": ids[1], "error": {"code": "oops", "message": 5}},
        {"id": ids[2], "error": "flat string"},
        {"id": ids[3]},
    )
    assert events == [
        ErrorReceived(ids[0], -32601, "Unknown method: m", [1]),
        ErrorReceived(ids[1], -32603, "5"),
        ErrorReceived(ids[2], -32603, "malformed answer: neither result nor error"),
        ErrorReceived(ids[3], -32603, "malformed answer: neither result nor error"),
    ]


def test_error_code_true_is_not_an_integer() -> None:
    client = open_client()
    request_id = client.send_request("m")
    [event] = from_server(client, {"id": request_id, "error": {"code": True, "message": "x"}})
    assert event == ErrorReceived(request_id, -32603, "x")


def test_server_request_to_the_client_is_answered_method_not_found() -> None:
    client = open_client()
    assert from_server(client, {"id": "s1", "method": "sampling/createMessage"}) == []
    reply = _unmask_all(client.data_to_send())
    assert json.loads(reply) == {
        "id": "s1",
        "error": {"code": -32601, "message": "Unknown method: sampling/createMessage"},
    }
    # With an id no request can carry, there is nobody to answer.
    assert from_server(client, {"id": None, "method": "x"}) == []
    assert client.data_to_send() == b""


def test_notifications_and_garbage_from_the_server() -> None:
    client = open_client()
    events = from_server(
        client,
        {"method": "progress", "params": {"done": 1}},
        {"method": "tick"},
        "not json",
        "[1, 2]",
        '{"id": 1, "result": NaN}',
    )
    assert events == [NotificationReceived("progress", {"done": 1}), NotificationReceived("tick")]


def test_client_ping_gets_pong(pair: ConnectionPair) -> None:
    pair.client.ping(b"abc")
    pair.pump()
    assert pair.take_client_events() == [PongReceived(b"abc")]


def test_sending_before_open_or_after_close_is_refused() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError, match="connecting"):
        client.send_request("ping")
    with pytest.raises(LocalProtocolError, match="connecting"):
        client.notify("tick")
    client.ping()  # a ping before the handshake is silently skipped
    client.connect("localhost")
    with pytest.raises(LocalProtocolError, match="already"):
        client.connect("localhost")
    client.receive_data(accept_bytes(client))
    client.close()
    with pytest.raises(LocalProtocolError, match="closing"):
        client.invoke_tool("echo", {"message": "x"})


def test_invoke_tool_sends_the_seed_envelope() -> None:
    client = open_client()
    client.invoke_tool("echo", {"message": "x"})
    client.invoke_tool("get_stats")
    first, second = _unmask_all(client.data_to_send(), split=True)
    assert json.loads(first) == {
        "id": 1,
        "method": "invoke_tool",
        "params": {"tool_name": "echo", "params": {"message": "x"}},
    }
    assert json.loads(second)["params"] == {"tool_name": "get_stats", "params": {}}


def test_eof_lists_the_requests_left_without_answers(pair: ConnectionPair) -> None:
    ids = [pair.client.send_request("ping") for _ in range(3)]
    pair.client.receive_eof()
    assert pair.client.events_received() == [ConnectionClosed(1006, "connection lost", tuple(ids))]
    assert pair.client.pending == frozenset()
    assert pair.client.state is ConnectionState.CLOSED


def test_unanswered_ids_are_all_listed() -> None:
    client = open_client()
    ids = {client.send_request("ping") for _ in range(12)}
    client.receive_eof()
    [closed] = client.events_received()
    assert isinstance(closed, ConnectionClosed)
    assert set(closed.unanswered) == ids
    assert len(closed.unanswered) == 12


def test_server_close_lists_pending_requests(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("add", {"a": 1})
    pair.pump()
    pair.server.close(1001)
    pair.pump()
    assert pair.take_client_events() == [ConnectionClosed(1001, "", (1,))]


def test_rejection_without_body() -> None:
    client = ClientConnection()
    client.connect("localhost")
    client.receive_data(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
    assert client.events_received() == [ConnectionRejected(503, (("content-length", "0"),), b"")]
    assert client.state is ConnectionState.CLOSED


def test_rejection_informational_status_without_body() -> None:
    client = ClientConnection()
    client.connect("localhost")
    client.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert client.events_received() == [ConnectionRejected(100, (), b"")]


def test_rejection_body_is_capped_at_the_message_size() -> None:
    from securemcp.protocol import Limits

    client = ClientConnection(limits=Limits(max_message_size=4))
    client.connect("localhost")
    client.receive_data(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 10\r\n\r\n0123456")
    assert client.events_received() == []
    client.receive_data(b"789")
    [rejected] = client.events_received()
    assert isinstance(rejected, ConnectionRejected)
    assert (rejected.status_code, rejected.body) == (401, b"0123")


@pytest.mark.parametrize(
    "answer",
    [b"garbage\r\n\r\n", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"],
)
def test_an_answer_that_is_not_an_upgrade(answer: bytes) -> None:
    client = ClientConnection()
    client.connect("localhost")
    client.receive_data(answer)
    [rejected] = client.events_received()
    assert isinstance(rejected, ConnectionRejected)
    assert rejected.status_code == 0
    assert rejected.body  # the reason, for the log
    assert client.state is ConnectionState.CLOSED


def _unmask_all(data: bytes, *, split: bool = False) -> Any:
    """Decode masked client frames (short payloads only) into their payloads."""
    payloads: list[bytes] = []
    while data:
        length = data[1] & 0x7F
        assert data[1] & 0x80, "client frames are masked"
        assert length < 126
        mask, body = data[2:6], data[6 : 6 + length]
        payloads.append(bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
        data = data[6 + length :]
    return payloads if split else b"".join(payloads)
