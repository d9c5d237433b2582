"""The server core's tool calls and notifications, through an in-memory client.

Sync and async tools, validated arguments and every way a call fails (tool
errors, unknown tools and methods, malformed params, validation failures,
duplicate ids); answers in any order, twice, or after a close; notifications
never answered, pushed by the server.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from securemcp import Cancelled, LocalProtocolError, SecureMCP
from securemcp.protocol import (
    ConnectionClosed,
    ConnectionState,
    ErrorReceived,
    NotificationReceived,
    ResponseReceived,
    ToolCall,
)

from .helpers import ConnectionPair, open_server, parse_server_messages, text_frame


def error_of(event: Any) -> tuple[int, str]:
    assert isinstance(event, ErrorReceived), event
    return event.code, event.message


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
