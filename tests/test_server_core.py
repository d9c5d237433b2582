"""The server core through an in-memory client: methods, tool calls, limits, closing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from securemcp import Cancelled, LocalProtocolError, SecureMCP
from securemcp.protocol import (
    Connected,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionState,
    ErrorReceived,
    HandshakeRequest,
    Limits,
    NotificationReceived,
    PongReceived,
    ResponseReceived,
    ServerConnection,
    ToolCall,
    Welcome,
)

from .helpers import (
    UPGRADE_REQUEST,
    ConnectionPair,
    demo_app,
    open_server,
    parse_server_messages,
    text_frame,
)


@pytest.fixture
def app() -> SecureMCP:
    return demo_app()


@pytest.fixture
def pair(app: SecureMCP) -> ConnectionPair:
    pair = ConnectionPair(app)
    pair.open()
    pair.take_client_events()
    return pair


def error_of(event: Any) -> tuple[int, str]:
    assert isinstance(event, ErrorReceived), event
    return event.code, event.message


# Handshake


def test_handshake_request_carries_path_host_headers_and_subprotocols(app: SecureMCP) -> None:
    pair = ConnectionPair(app)
    request = pair.open(subprotocols=["mcp"], extra_headers=[("Authorization", "Bearer t")])
    assert request.path == "/mcp"
    assert request.host == "localhost"
    assert request.subprotocols == ("mcp",)
    assert request.header("authorization") == "Bearer t"
    assert request.header("AUTHORIZATION") == "Bearer t"
    assert request.header("x-missing") is None
    assert pair.server.state is ConnectionState.OPEN
    assert pair.client.state is ConnectionState.OPEN


def test_accept_greets_the_client_with_the_app_name_and_tools(app: SecureMCP) -> None:
    server = ServerConnection(app)
    server.receive_data(UPGRADE_REQUEST)
    server.events_received()
    server.accept()
    head, _, frames = server.data_to_send().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert parse_server_messages(frames) == [
        {"id": "welcome", "result": {"message": "Connected to demo", "tools": list(app.tools)}}
    ]


def test_client_sees_connected_then_welcome(app: SecureMCP) -> None:
    pair = ConnectionPair(app)
    pair.open()
    connected, welcome = pair.take_client_events()
    assert connected == Connected(subprotocol=None, headers=())
    assert welcome == Welcome("Connected to demo", tuple(app.tools))


def test_accept_without_welcome_sends_only_the_upgrade(app: SecureMCP) -> None:
    pair = ConnectionPair(app)
    pair.open(welcome=False)
    assert [type(e).__name__ for e in pair.take_client_events()] == ["Connected"]


def test_accept_with_subprotocol_and_headers(app: SecureMCP) -> None:
    pair = ConnectionPair(app)
    pair.client.connect("localhost", "/", subprotocols=["mcp"])
    pair.pump()
    pair.take_server_events()
    pair.server.accept("mcp", [("X-Server", "securemcp")])
    pair.pump()
    # The "mcp" subprotocol selects the MCP dialect, which has no welcome message.
    [connected] = pair.take_client_events()
    assert isinstance(connected, Connected)
    assert connected.subprotocol == "mcp"
    assert ("x-server", "securemcp") in connected.headers
    assert pair.server.subprotocol == pair.client.subprotocol == "mcp"


def test_frames_sent_before_the_decision_wait_for_it(app: SecureMCP) -> None:
    # RFC 6455 clients wait for the 101 before sending frames; one that does not
    # has its frames held, unparsed, until the upgrade is decided, then served
    # in order by the accepted connection (and never by a refused one).
    server = ServerConnection(app)
    server.receive_data(UPGRADE_REQUEST + text_frame({"id": 1, "method": "ping"}))
    assert [type(e) for e in server.events_received()] == [HandshakeRequest]
    assert not server.wants_read  # the decision is pending
    assert server.data_to_send() == b""
    server.accept(welcome=False)
    _, _, frames = server.data_to_send().partition(b"\r\n\r\n")
    assert parse_server_messages(frames) == [{"id": 1, "result": {"pong": True}}]
    server.receive_data(text_frame({"id": 2, "method": "ping"}))
    assert parse_server_messages(server.data_to_send()) == [{"id": 2, "result": {"pong": True}}]


def test_frames_sent_before_a_refusal_are_never_read(app: SecureMCP) -> None:
    server = ServerConnection(app)
    server.receive_data(UPGRADE_REQUEST + text_frame({"id": 1, "method": "ping"}))
    assert [type(e) for e in server.events_received()] == [HandshakeRequest]
    server.reject(403)
    assert server.data_to_send().startswith(b"HTTP/1.1 403 ")
    assert server.state is ConnectionState.CLOSED
    server.receive_data(text_frame({"id": 2, "method": "ping"}))
    assert server.data_to_send() == b""
    assert server.events_received() == []


def test_reject_gives_the_client_the_status_and_body(app: SecureMCP) -> None:
    pair = ConnectionPair(app)
    pair.client.connect("localhost")
    pair.pump()
    pair.server.reject(401, "no token\n", [("WWW-Authenticate", "Bearer")])
    pair.pump()
    [rejected] = pair.take_client_events()
    assert isinstance(rejected, ConnectionRejected)
    assert rejected.status_code == 401
    assert rejected.body == b"no token\n"
    assert ("www-authenticate", "Bearer") in rejected.headers
    assert pair.server.state is ConnectionState.CLOSED
    assert pair.client.state is ConnectionState.CLOSED
    assert not pair.server.wants_read


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, None, b"Forbidden\n"),  # the status phrase by default
        (599, None, b""),  # no phrase for an unknown status
        (429, "slow down", b"slow down"),
        (503, b"\xffraw", b"\xffraw"),
    ],
)
def test_reject_body(
    app: SecureMCP, status: int, body: bytes | str | None, expected: bytes
) -> None:
    pair = ConnectionPair(app)
    pair.client.connect("localhost")
    pair.pump()
    pair.server.reject(status, body)
    pair.pump()
    [rejected] = pair.take_client_events()
    assert isinstance(rejected, ConnectionRejected)
    assert (rejected.status_code, rejected.body) == (status, expected)
    assert ("content-length", str(len(expected))) in rejected.headers


def test_accept_and_reject_are_refused_outside_a_handshake(app: SecureMCP) -> None:
    server = ServerConnection(app)
    with pytest.raises(LocalProtocolError, match="accept"):
        server.accept()
    with pytest.raises(LocalProtocolError, match="reject"):
        server.reject(401)
    server = open_server(app)
    with pytest.raises(LocalProtocolError):
        server.accept()
    with pytest.raises(LocalProtocolError):
        server.reject()


def test_non_upgrade_http_request_gets_400(app: SecureMCP) -> None:
    server = ServerConnection(app)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert server.events_received() == []
    answer = server.data_to_send()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer.lower()
    assert b"Bad Request: Missing header, 'Connection: Upgrade'" in answer
    assert server.state is ConnectionState.CLOSED
    server.receive_data(UPGRADE_REQUEST)  # ignored: the connection is over
    assert server.events_received() == []
    assert server.data_to_send() == b""


@pytest.mark.parametrize("host", [b"\xff\xfe", b"xn--zz"])
def test_undecodable_host_header_gets_400(app: SecureMCP, host: bytes) -> None:
    server = ServerConnection(app)
    server.receive_data(UPGRADE_REQUEST.replace(b"localhost", host))
    assert server.events_received() == []
    assert server.data_to_send().startswith(b"HTTP/1.1 400 ")
    assert server.state is ConnectionState.CLOSED


def test_close_before_handshake_is_refused(app: SecureMCP) -> None:
    with pytest.raises(LocalProtocolError):
        ServerConnection(app).close()


def test_eof_before_handshake_closes_abnormally(app: SecureMCP) -> None:
    server = ServerConnection(app)
    server.receive_eof()
    assert server.events_received() == [ConnectionClosed(1006, "connection lost")]
    server.receive_eof()  # twice is harmless
    assert server.events_received() == []


# Built-in methods


def test_ping_answers_pong(pair: ConnectionPair) -> None:
    assert pair.request("ping") == ResponseReceived(1, {"pong": True})


def test_list_tools_describes_every_tool(pair: ConnectionPair, app: SecureMCP) -> None:
    answer = pair.request("list_tools")
    assert isinstance(answer, ResponseReceived)
    tools = {tool["name"]: tool for tool in answer.result["tools"]}
    assert list(tools) == list(app.tools)
    assert tools["echo"]["description"] == "Echo a message back."
    assert tools["echo"]["is_async"] is True
    assert tools["add"]["is_async"] is False
    assert tools["norm"]["description"] == "Squared length of a point."
    assert tools["boom"]["description"] is None
    assert tools["echo"]["inputSchema"] == {
        "type": "object",
        "properties": {"message": {"title": "Message", "type": "string"}},
        "required": ["message"],
        "additionalProperties": False,
    }
    assert tools["add"]["inputSchema"]["properties"]["b"] == {
        "default": 0,
        "minimum": 0,
        "title": "B",
        "type": "integer",
    }
    # outputSchema only where the return annotation describes an object.
    assert tools["echo"]["outputSchema"]["type"] == "object"
    assert "outputSchema" not in tools["add"]
    assert "outputSchema" not in tools["boom"]


# Tool calls


def test_invoke_sync_tool(pair: ConnectionPair) -> None:
    assert pair.invoke("add", {"a": 2, "b": 3}) == ResponseReceived(1, 5)
    assert pair.invoke("add", {"a": 2}) == ResponseReceived(2, 2)


def test_invoke_async_tool(pair: ConnectionPair) -> None:
    assert pair.invoke("echo", {"message": "hi"}) == ResponseReceived(1, {"echoed": "hi"})


def test_invoke_tool_with_nested_model(pair: ConnectionPair) -> None:
    assert pair.invoke("norm", {"point": {"x": 3, "y": 4}}) == ResponseReceived(1, 25)


def test_tool_call_event_carries_validated_arguments(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("add", {"a": "7"})
    pair.pump()
    [call] = pair.calls
    assert call.id == 1
    assert call.tool is pair.app.tools["add"]
    assert call.arguments == {"a": 7, "b": 0}
    assert call.method == "invoke_tool"
    assert call.jsonrpc is False
    assert pair.server.calls_in_flight == 1


def test_tool_exception_becomes_tool_execution_error(pair: ConnectionPair) -> None:
    assert error_of(pair.invoke("boom")) == (-32000, "Tool execution error: kaput")


def test_tool_error_passes_through_with_its_data(pair: ConnectionPair) -> None:
    answer = pair.invoke("refuse", {"reason": "no"})
    assert answer == ErrorReceived(1, -32000, "refused: no", {"reason": "no"})


def test_invalid_params_from_a_tool_passes_through(pair: ConnectionPair) -> None:
    assert error_of(pair.invoke("picky")) == (-32602, "picky says no")


def test_custom_rpc_error_code_passes_through(pair: ConnectionPair) -> None:
    assert pair.invoke("custom") == ErrorReceived(1, -31418, "teapot", [1, 2])


@pytest.mark.parametrize("tool", ["opaque", "not_a_number"])
def test_unserialisable_result_is_an_internal_error(
    pair: ConnectionPair, tool: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="securemcp.protocol"):
        answer = pair.invoke(tool)
    assert isinstance(answer, ErrorReceived)
    assert (answer.code, answer.message) == (-32603, "Internal error")
    # The caller gets a correlation id that finds the details in the server log.
    correlation = answer.data["correlation_id"]
    assert f"tool {tool!r} returned a value JSON cannot hold [{correlation}]" in caplog.text
    # The connection goes on.
    assert pair.request("ping") == ResponseReceived(2, {"pong": True})


def test_unserialisable_error_data_is_left_out(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("boom")
    pair.pump()
    pair.server.fail(pair.calls.pop(), Cancelled("stop", data=object()))
    pair.pump()
    assert pair.take_client_events() == [ErrorReceived(1, -32800, "stop")]


def test_unknown_tool(pair: ConnectionPair) -> None:
    assert error_of(pair.invoke("nope")) == (-32601, "Tool not found: nope")


def test_unknown_method(pair: ConnectionPair) -> None:
    assert error_of(pair.request("x")) == (-32601, "Unknown method: x")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (None, "Invalid params: expected an object with 'tool_name' and 'params'"),
        ([1], "Invalid params: expected an object with 'tool_name' and 'params'"),
        ({}, "Missing tool_name in params"),
        ({"tool_name": ""}, "Missing tool_name in params"),
        ({"tool_name": 5}, "Invalid params: 'tool_name' must be a string"),
    ],
)
def test_malformed_invoke_tool_params(pair: ConnectionPair, params: Any, message: str) -> None:
    assert error_of(pair.request("invoke_tool", params)) == (-32602, message)


def test_validation_failure_lists_loc_msg_type(pair: ConnectionPair) -> None:
    answer = pair.invoke("add", {"a": "x", "b": -1})
    assert isinstance(answer, ErrorReceived)
    assert answer.code == -32602
    assert answer.message.startswith("Invalid params for tool 'add': a: ")
    assert answer.data == [
        {
            "loc": ["a"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        },
        {
            "loc": ["b"],
            "msg": "Input should be greater than or equal to 0",
            "type": "greater_than_equal",
        },
    ]


def test_missing_and_extra_arguments_are_refused(pair: ConnectionPair) -> None:
    answer = pair.invoke("echo", {"text": "hi"})
    assert isinstance(answer, ErrorReceived)
    assert answer.code == -32602
    assert sorted((e["loc"], e["type"]) for e in answer.data) == [
        (["message"], "missing"),
        (["text"], "extra_forbidden"),
    ]


def test_arguments_that_are_not_an_object(pair: ConnectionPair) -> None:
    request_id = pair.client.send_request("invoke_tool", {"tool_name": "add", "params": [1, 2]})
    pair.pump()
    [answer] = pair.take_client_events()
    assert answer == ErrorReceived(
        request_id,
        -32602,
        "Invalid params for tool 'add': arguments must be an object",
        [{"loc": [], "msg": "Input should be an object", "type": "dict_type"}],
    )


def test_duplicate_in_flight_id_is_refused(pair: ConnectionPair) -> None:
    request = {
        "id": "same",
        "method": "invoke_tool",
        "params": {"tool_name": "add", "params": {"a": 1}},
    }
    pair.server.receive_data(text_frame(request) + text_frame(request))
    [call] = pair.server.events_received()
    assert parse_server_messages(pair.server.data_to_send()) == [
        {
            "id": "same",
            "error": {
                "code": -32600,
                "message": "Invalid Request: id 'same' is already in use by a call in flight",
            },
        }
    ]
    assert isinstance(call, ToolCall)
    pair.server.complete(call, 1)
    # Once answered, the id is free again.
    pair.server.receive_data(text_frame(request))
    assert [type(e) for e in pair.server.events_received()] == [ToolCall]


def test_answers_echo_jsonrpc_when_the_request_had_it(pair: ConnectionPair) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "invoke_tool",
        "params": {"tool_name": "add", "params": {"a": 1}},
    }
    assert pair.send_raw(call) == [{"jsonrpc": "2.0", "id": 9, "result": 1}]
    call["params"] = {"tool_name": "boom"}
    assert pair.send_raw(call) == [
        {
            "jsonrpc": "2.0",
            "id": 9,
            "error": {"code": -32000, "message": "Tool execution error: kaput"},
        }
    ]
    assert pair.send_raw({"jsonrpc": "2.0", "id": "p", "method": "ping"}) == [
        {"jsonrpc": "2.0", "id": "p", "result": {"pong": True}}
    ]
    assert pair.send_raw({"id": "p", "method": "ping"}) == [{"id": "p", "result": {"pong": True}}]


def test_complete_and_fail_in_any_order(pair: ConnectionPair) -> None:
    ids = [pair.client.invoke_tool("add", {"a": n}) for n in range(3)]
    pair.pump()
    first, second, third = pair.calls
    pair.server.complete(third, "third")
    pair.server.fail(first, ValueError("first"))
    pair.server.complete(second, "second")
    pair.pump()
    assert pair.take_client_events() == [
        ResponseReceived(ids[2], "third"),
        ErrorReceived(ids[0], -32000, "Tool execution error: first"),
        ResponseReceived(ids[1], "second"),
    ]
    assert pair.server.calls_in_flight == 0


def test_answering_a_call_twice_is_a_local_error(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("add", {"a": 1})
    pair.pump()
    [call] = pair.calls
    pair.server.complete(call, 1)
    with pytest.raises(LocalProtocolError, match="not pending"):
        pair.server.complete(call, 1)
    with pytest.raises(LocalProtocolError, match="not pending"):
        pair.server.fail(call, RuntimeError())


def test_answering_a_call_from_another_connection_is_a_local_error(
    pair: ConnectionPair, app: SecureMCP
) -> None:
    other = open_server(app)
    other.receive_data(
        text_frame(
            {"id": 1, "method": "invoke_tool", "params": {"tool_name": "add", "params": {"a": 1}}}
        )
    )
    [foreign] = other.events_received()
    assert isinstance(foreign, ToolCall)
    pair.client.invoke_tool("add", {"a": 1})  # the same id, 1, on this connection
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.server.complete(foreign, 1)


def test_answers_after_the_peer_closed_are_dropped(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("add", {"a": 1})
    pair.client.invoke_tool("add", {"a": 2})
    pair.pump()
    first, second = pair.calls
    pair.client.close()
    pair.pump()
    [closed] = [e for e in pair.take_server_events() if isinstance(e, ConnectionClosed)]
    assert closed == ConnectionClosed(1000, "", (1, 2))
    pair.server.complete(first, 1)  # silently dropped
    pair.server.fail(second, RuntimeError())
    pair.server.complete(first, 1)  # even twice: the connection is over
    assert pair.server.data_to_send() == b""


def test_answers_while_our_close_is_pending_are_dropped(pair: ConnectionPair) -> None:
    pair.client.invoke_tool("add", {"a": 1})
    pair.pump()
    [call] = pair.calls
    pair.take_server_events()
    pair.server.close(1001, "going away")
    assert pair.server.close_expected()
    closing_bytes = pair.server.data_to_send()
    pair.server.complete(call, 1)
    assert pair.server.data_to_send() == b""
    assert pair.server.calls_in_flight == 0
    pair.client.receive_data(closing_bytes)
    pair.pump()
    assert pair.take_client_events()[-1] == ConnectionClosed(1001, "going away", (1,))
    [closed] = pair.take_server_events()
    assert closed == ConnectionClosed(1001, "going away", ())


# Notifications


def test_notifications_are_never_answered(pair: ConnectionPair) -> None:
    for method in ("ping", "list_tools", "invoke_tool", "unknown"):
        pair.client.notify(method, {"tool_name": "add", "params": {"a": 1}})
    pair.pump()
    assert pair.server.data_to_send() == b""
    assert pair.take_server_events() == []
    assert pair.calls == []


def test_answers_to_nothing_are_ignored(pair: ConnectionPair) -> None:
    for message in (
        {"id": 5, "result": 1},
        {"id": "x", "error": {"code": 1, "message": "m"}},
        {"id": None, "error": {"code": -32700, "message": "Parse error"}},
        {"id": [1], "result": None},
        {"result": 1},
    ):
        assert pair.send_raw(message) == []


def test_server_notify_reaches_the_client(pair: ConnectionPair) -> None:
    assert pair.server.notify("chat/message", {"text": "hi"}) is True
    assert pair.server.notify("tick") is True
    pair.pump()
    assert pair.take_client_events() == [
        NotificationReceived("chat/message", {"text": "hi"}),
        NotificationReceived("tick", None),
    ]


def test_notify_before_accept_raises_and_after_close_returns_false(app: SecureMCP) -> None:
    pair = ConnectionPair(app)
    with pytest.raises(LocalProtocolError):
        pair.server.notify("tick")
    pair.open()
    pair.server.close()
    assert pair.server.notify("tick") is False
    pair.pump()
    assert pair.server.state is ConnectionState.CLOSED
    assert pair.server.notify("tick") is False


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
