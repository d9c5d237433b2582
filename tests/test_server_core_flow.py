"""The server core's backpressure and closing, through an in-memory client.

Reading pauses at the in-flight and unsent-output limits, control frames are
answered (or wait, never lost) meanwhile; closes from either side, EOF with
calls running, and the validation of :class:`Limits`.
"""

from __future__ import annotations

import pytest

from securemcp import Cancelled, SecureMCP
from securemcp.protocol import (
    ConnectionClosed,
    ConnectionState,
    Limits,
    PongReceived,
    ResponseReceived,
    ToolCall,
)

from .helpers import ConnectionPair, open_server, parse_server_messages, text_frame

# Backpressure


def test_in_flight_limit_pauses_reading(app: SecureMCP) -> None:
    pair = ConnectionPair(app, limits=Limits(max_in_flight=2))
    pair.open()
    pair.take_client_events()
    ids = [pair.client.invoke_tool("add", {"a": n}) for n in range(5)]
    pair.pump()
    assert [call.id for call in pair.calls] == ids[:2]
    assert not pair.server.wants_read
    assert pair.server.calls_in_flight == 2

    pair.answer(pair.calls[0])
    pair.pump()
    assert [call.id for call in pair.calls] == [ids[1], ids[2]]
    assert not pair.server.wants_read

    pair.answer_all()
    assert pair.server.wants_read
    assert pair.take_client_events() == [ResponseReceived(i, n) for n, i in enumerate(ids)]


def test_output_limit_pauses_reading_until_drained(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_pending_output=64))
    ping = text_frame({"id": "a-longer-request-id-to-fill-output", "method": "ping"})
    server.receive_data(ping * 3)
    # The first answer alone passes the limit: the other two requests wait.
    first = server.data_to_send()
    assert len(parse_server_messages(first)) == 1
    # Draining lets the next one through, and so on.
    assert len(parse_server_messages(server.data_to_send())) == 1
    assert len(parse_server_messages(server.data_to_send())) == 1
    assert server.data_to_send() == b""


def test_wants_read_is_false_once_over_the_output_limit(app: SecureMCP) -> None:
    server = open_server(app, limits=Limits(max_pending_output=10))
    assert server.wants_read
    assert server.notify("tick", {"padding": "x" * 20})
    assert not server.wants_read
    server.data_to_send()
    assert server.wants_read


def test_pings_are_answered_while_calls_are_pending(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("add", {"a": 1})
    pair.pump()
    assert pair.server.calls_in_flight == 1
    pair.client.ping(b"keepalive")
    pair.pump()
    assert pair.take_client_events() == [PongReceived(b"keepalive")]
    pair.answer_all()
    assert pair.take_client_events() == [ResponseReceived(1, 1)]


def test_control_frames_wait_while_at_the_in_flight_limit_and_are_not_lost(
    app: SecureMCP,
) -> None:
    # At the limit the core reads nothing (TCP pushes back on the peer), control
    # frames included: a backend must not count a missing pong against a peer it
    # is itself not reading from. Once a call completes, the pong is there.
    pair = ConnectionPair(app, limits=Limits(max_in_flight=1))
    pair.open()
    pair.client.invoke_tool("add", {"a": 1})
    pair.pump()
    assert not pair.server.wants_read
    [call] = pair.take_server_events()
    assert isinstance(call, ToolCall)
    pair.server.ping(b"alive?")
    pair.server.receive_data(b"")  # nothing new: still paused
    pair.pump()
    assert pair.take_server_events() == []
    pair.server.complete(call, 1)
    pair.pump()
    assert pair.take_server_events() == [PongReceived(b"alive?")]
    assert pair.server.wants_read


def test_server_ping_gets_a_pong(pair: ConnectionPair) -> None:
    pair.server.ping(b"srv")
    pair.pump()
    assert pair.take_server_events() == [PongReceived(b"srv")]


# Closing


def test_client_closes_with_a_code(pair: ConnectionPair) -> None:
    pair.client.close(4000, "bye")
    assert pair.client.state.value == "closing"
    assert pair.client.close_expected()
    pair.pump()
    assert pair.take_server_events() == [ConnectionClosed(4000, "bye")]
    assert pair.take_client_events() == [ConnectionClosed(4000, "bye")]
    assert pair.server.state is pair.client.state is ConnectionState.CLOSED
    assert not pair.server.wants_read
    assert not pair.client.wants_read


def test_server_closes_with_a_code(pair: ConnectionPair) -> None:
    pair.server.close(1001, "shutting down")
    assert not pair.client.close_expected()
    pair.pump()
    assert pair.take_client_events() == [ConnectionClosed(1001, "shutting down")]
    assert pair.take_server_events() == [ConnectionClosed(1001, "shutting down")]


def test_close_is_harmless_when_already_closing_or_closed(pair: ConnectionPair) -> None:
    pair.server.close(1000)
    pair.server.close(1011)  # already closing: ignored
    pair.pump()
    pair.server.close()
    pair.client.close()
    pair.server.ping()
    pair.client.ping()
    pair.server.receive_data(b"late bytes")
    pair.server.receive_eof()
    assert pair.server.data_to_send() == pair.client.data_to_send() == b""
    assert pair.take_server_events() == [ConnectionClosed(1000, "")]


def test_eof_mid_connection_lists_running_calls(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("add", {"a": 1})
    pair.client.send_request("invoke_tool", {"tool_name": "echo", "params": {"message": "m"}})
    pair.pump()
    pair.server.receive_eof()
    assert pair.server.events_received() == [ConnectionClosed(1006, "connection lost", (1, 2))]
    assert pair.server.state is ConnectionState.CLOSED
    assert pair.server.calls_in_flight == 0
    # The backend cancels the calls; their late answers go nowhere.
    for call in pair.calls:
        pair.server.fail(call, Cancelled("cancelled"))
    assert pair.server.data_to_send() == b""


def test_limits_are_validated() -> None:
    assert Limits().max_message_size == 1024 * 1024
    for field in ("max_message_size", "max_json_depth", "max_in_flight", "max_pending_output"):
        for bad in (0, -1, True, 1.5, "2"):
            with pytest.raises(ValueError, match=field):
                Limits(**{field: bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot exceed 200"):
        Limits(max_json_depth=201)
    assert Limits(max_json_depth=200).max_json_depth == 200
