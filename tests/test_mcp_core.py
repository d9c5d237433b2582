"""The MCP dialect of the server core, through in-memory connections and exact messages."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securemcp import Context, Progress, SecureMCP
from securemcp.protocol import (
    CallCancelled,
    ConnectionState,
    ErrorReceived,
    NotificationReceived,
    ResponseReceived,
    ServerConnection,
    ToolCall,
)
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION, PROTOCOL_VERSIONS, SUBPROTOCOL

from .helpers import (
    UPGRADE_REQUEST,
    ConnectionPair,
    demo_app,
    parse_server_messages,
    run_tool,
    server_frame,
    text_frame,
)

INIT_PARAMS = {
    "protocolVersion": LATEST_PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "1"},
}


def mcp_app() -> SecureMCP:
    """The core tests' tools plus the MCP-only features: titles, annotations, progress."""
    app = demo_app()

    @app.tool(title="Shout", annotations={"readOnlyHint": True, "openWorldHint": False})
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    @app.tool()
    def steps(count: int, progress: Progress, ctx: Context) -> int:
        """Report progress ``count`` times."""
        for step in range(1, count + 1):
            progress.report(step, count, f"step {step}")
        return count

    return app


def open_mcp(
    app: SecureMCP | None = None, *, version: str | None = LATEST_PROTOCOL_VERSION
) -> ConnectionPair:
    """A pair whose connection negotiated ``mcp``; initialised unless ``version`` is None."""
    pair = ConnectionPair(app or mcp_app())
    pair.client.connect("localhost", "/mcp", subprotocols=[SUBPROTOCOL])
    pair.pump()
    pair.take_server_events()
    pair.server.accept(SUBPROTOCOL)
    pair.pump()
    pair.take_client_events()
    pair.client.jsonrpc = True
    if version is not None:
        [answer] = pair.send_raw(request("initialize", {**INIT_PARAMS, "protocolVersion": version}))
        assert answer["result"]["protocolVersion"] == version
        assert pair.send_raw(notification("notifications/initialized")) == []
    return pair


def request(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def error(message: dict[str, Any]) -> tuple[Any, int]:
    assert message["jsonrpc"] == "2.0"
    assert "result" not in message
    return message["id"], message["error"]["code"]


def call(pair: ConnectionPair, name: str, arguments: Any = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, **extra}
    if arguments is not None:
        params["arguments"] = arguments
    [answer] = pair.send_raw(request("tools/call", params, 7))
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == 7
    return answer


# Dialect selection


def test_the_mcp_subprotocol_selects_mcp_and_sends_no_welcome() -> None:
    server = ServerConnection(demo_app())
    server.receive_data(
        UPGRADE_REQUEST.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: mcp\r\n\r\n")
    )
    server.events_received()
    server.accept(SUBPROTOCOL)
    head, _, frames = server.data_to_send().partition(b"\r\n\r\n")
    assert b"sec-websocket-protocol: mcp" in head.lower()
    assert frames == b""
    assert server.mcp is not None
    assert server.mcp.protocol_version is None


def test_a_seed_connection_opening_with_initialize_switches_to_mcp() -> None:
    pair = ConnectionPair(mcp_app())
    pair.open()  # no subprotocol: the seed dialect, welcome included
    pair.take_client_events()
    assert pair.server.mcp is None
    [answer] = pair.send_raw(request("initialize", INIT_PARAMS))
    assert answer["result"]["protocolVersion"] == LATEST_PROTOCOL_VERSION
    assert pair.server.mcp is not None
    # From then on the connection is strict MCP.
    [refused] = pair.send_raw({"id": "x", "method": "ping"})
    assert error(refused) == ("x", -32600)


def test_initialize_later_on_a_seed_connection_is_just_an_unknown_method() -> None:
    pair = ConnectionPair(mcp_app())
    pair.open()
    assert pair.send_raw({"id": 1, "method": "ping"}) == [{"id": 1, "result": {"pong": True}}]
    [answer] = pair.send_raw(request("initialize", INIT_PARAMS))
    assert error(answer) == (1, -32601)
    assert pair.server.mcp is None


# Lifecycle


@pytest.mark.parametrize("version", PROTOCOL_VERSIONS)
def test_initialize_echoes_every_supported_version(version: str) -> None:
    pair = open_mcp(version=None)
    [answer] = pair.send_raw(request("initialize", {**INIT_PARAMS, "protocolVersion": version}))
    assert answer == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "demo", "version": "0.1.0"},
            "instructions": "Tools for the core tests.",
        },
    }
    session = pair.server.mcp
    assert session is not None
    assert session.protocol_version == version
    assert session.client_info == {"name": "test", "version": "1"}
    assert not session.initialized


def test_an_unknown_version_is_answered_with_the_latest() -> None:
    pair = open_mcp(version=None)
    [answer] = pair.send_raw(
        request("initialize", {**INIT_PARAMS, "protocolVersion": "2099-01-01"})
    )
    assert answer["result"]["protocolVersion"] == LATEST_PROTOCOL_VERSION


def test_instructions_are_left_out_without_a_description() -> None:
    pair = open_mcp(SecureMCP("bare", version="2.0"), version=None)
    [answer] = pair.send_raw(request("initialize", INIT_PARAMS))
    assert answer["result"]["serverInfo"] == {"name": "bare", "version": "2.0"}
    assert "instructions" not in answer["result"]


@pytest.mark.parametrize("params", [{}, {"protocolVersion": 20241105}, {"protocolVersion": None}])
def test_initialize_without_a_version_string_is_invalid_params(params: dict[str, Any]) -> None:
    pair = open_mcp(version=None)
    [answer] = pair.send_raw(request("initialize", params))
    assert error(answer) == (1, -32602)
    assert answer["error"]["data"]["supported"] == list(PROTOCOL_VERSIONS)
    assert pair.server.mcp is not None
    assert pair.server.mcp.protocol_version is None


def test_initialize_twice_is_refused() -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(request("initialize", INIT_PARAMS, 2))
    assert error(answer) == (2, -32600)


def test_requests_before_initialized_are_refused_but_ping_is_answered() -> None:
    pair = open_mcp(version=None)
    assert pair.send_raw(request("ping", None, "p")) == [
        {"jsonrpc": "2.0", "id": "p", "result": {}}
    ]
    [early] = pair.send_raw(request("tools/list"))
    assert error(early) == (1, -32600)
    # initialized before initialize means nothing.
    assert pair.send_raw(notification("notifications/initialized")) == []
    pair.send_raw(request("initialize", INIT_PARAMS))
    [between] = pair.send_raw(request("tools/call", {"name": "add", "arguments": {"a": 1}}, 2))
    assert error(between) == (2, -32600)
    assert "initialize" in between["error"]["message"]
    assert pair.send_raw(notification("notifications/initialized")) == []
    [served] = pair.send_raw(request("tools/list", None, 3))
    assert served["result"]["tools"]


# Envelopes and ids


@pytest.mark.parametrize(
    ("message", "answer_id"),
    [
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, None),
        ({"id": 4, "method": "ping"}, 4),
        ({"jsonrpc": "1.0", "id": 4, "method": "ping"}, 4),
        ({"jsonrpc": "2.0", "id": 4, "method": 12}, 4),
        ({"jsonrpc": "2.0", "id": 4}, 4),
        ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], None),
        ("12", None),
    ],
)
def test_invalid_envelopes_are_invalid_requests(message: Any, answer_id: Any) -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(message)
    assert error(answer) == (answer_id, -32600)


def test_a_parse_error_is_answered_in_json_rpc_2() -> None:
    pair = open_mcp()
    [answer] = pair.send_raw("{not json")
    assert error(answer) == (None, -32700)


def test_string_and_integer_ids_are_echoed() -> None:
    pair = open_mcp()
    for request_id in ("abc", 0, -3, 2**53):
        [answer] = pair.send_raw(request("ping", None, request_id))
        assert answer == {"jsonrpc": "2.0", "id": request_id, "result": {}}


def test_params_must_be_an_object() -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(request("tools/list", [1, 2]))
    assert error(answer) == (1, -32602)


def test_unknown_methods_are_method_not_found() -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(request("resources/list"))
    assert error(answer) == (1, -32601)
    [seed] = pair.send_raw(request("list_tools"))
    assert error(seed) == (1, -32601)


@pytest.mark.parametrize(
    "message",
    [
        notification("notifications/roots/list_changed"),
        notification("notifications/cancelled"),
        notification("notifications/cancelled", {"requestId": None}),
        notification("notifications/cancelled", {"requestId": 99}),
        notification("notifications/cancelled", [1]),
        {"jsonrpc": "2.0", "id": 5, "result": {}},
        {"jsonrpc": "2.0", "id": 5, "error": {"code": 1, "message": "x"}},
    ],
)
def test_notifications_and_stray_answers_are_never_answered(message: dict[str, Any]) -> None:
    pair = open_mcp()
    assert pair.send_raw(message) == []
    assert pair.server.state is ConnectionState.OPEN


# tools/list


def test_tools_list_describes_mcp_tool_objects_in_registration_order() -> None:
    app = mcp_app()
    pair = open_mcp(app)
    [answer] = pair.send_raw(request("tools/list"))
    tools = answer["result"]["tools"]
    assert "nextCursor" not in answer["result"]
    assert [tool["name"] for tool in tools] == list(app.tools)
    by_name = {tool["name"]: tool for tool in tools}
    assert by_name["echo"] == {
        "name": "echo",
        "description": "Echo a message back.",
        "inputSchema": app.tools["echo"].input_schema,
        "outputSchema": {"type": "object", "additionalProperties": {"type": "string"}},
    }
    assert by_name["shout"]["title"] == "Shout"
    assert by_name["shout"]["annotations"] == {"readOnlyHint": True, "openWorldHint": False}
    assert "outputSchema" not in by_name["add"]
    assert "description" not in by_name["boom"]
    # Neither Progress nor Context is an argument the caller sets.
    assert by_name["steps"]["inputSchema"]["properties"].keys() == {"count"}
    for tool in tools:
        assert tool["inputSchema"]["type"] == "object"
        assert "is_async" not in tool


def test_older_revisions_get_only_the_fields_they_define() -> None:
    pair = open_mcp(version="2024-11-05")
    [answer] = pair.send_raw(request("tools/list"))
    by_name = {tool["name"]: tool for tool in answer["result"]["tools"]}
    assert set(by_name["shout"]) == {"name", "description", "inputSchema"}
    assert "outputSchema" not in by_name["echo"]
    pair = open_mcp(version="2025-03-26")
    [answer] = pair.send_raw(request("tools/list"))
    by_name = {tool["name"]: tool for tool in answer["result"]["tools"]}
    assert set(by_name["shout"]) == {"name", "description", "inputSchema", "annotations"}


def test_tools_list_pages_with_an_opaque_cursor() -> None:
    app = mcp_app()
    pair = open_mcp(app)
    assert pair.server.mcp is not None
    pair.server.mcp.page_size = 3
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = None if cursor is None else {"cursor": cursor}
        [answer] = pair.send_raw(request("tools/list", params))
        result = answer["result"]
        assert len(result["tools"]) <= 3
        names += [tool["name"] for tool in result["tools"]]
        pages += 1
        cursor = result.get("nextCursor")
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert names == list(app.tools)
    assert pages == -(-len(app.tools) // 3)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        7,
        base64.urlsafe_b64encode(b"tools:999").decode(),
        base64.urlsafe_b64encode(b"tools:0").decode(),
        base64.urlsafe_b64encode(b"other:1").decode(),
        base64.urlsafe_b64encode(b"tools:-1").decode(),
        "A" * 100,
    ],
)
def test_an_invalid_cursor_is_invalid_params(cursor: Any) -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(request("tools/list", {"cursor": cursor}))
    assert error(answer) == (1, -32602)


# tools/call


def test_a_result_is_text_content_and_structured_content_with_an_output_schema() -> None:
    pair = open_mcp()
    answer = call(pair, "echo", {"message": "héllo ✓"})
    assert answer["result"] == {
        "content": [{"type": "text", "text": '{"echoed":"héllo ✓"}'}],
        "structuredContent": {"echoed": "héllo ✓"},
        "isError": False,
    }


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), JSON_VALUES, max_size=5))
def test_a_result_is_encoded_once_into_text_and_structured_content(value: dict[str, Any]) -> None:
    # Quotes, backslashes, control characters, any Unicode: the text is the
    # result's JSON and the structured content the result itself.
    app = SecureMCP("structured")

    @app.tool()
    def give() -> dict[str, Any]:
        return value

    result = call(open_mcp(app), "give")["result"]
    assert json.loads(result["content"][0]["text"]) == value
    assert result["structuredContent"] == value
    assert result["isError"] is False


def test_results_without_an_output_schema_are_text_only() -> None:
    pair = open_mcp()
    assert call(pair, "add", {"a": 2, "b": 3})["result"] == {
        "content": [{"type": "text", "text": "5"}],
        "isError": False,
    }
    # A string is the text itself, not its JSON form.
    assert call(pair, "shout", {"text": "ok"})["result"]["content"] == [
        {"type": "text", "text": "OK"}
    ]
    assert call(pair, "norm", {"point": {"x": 3, "y": 4}})["result"]["content"][0]["text"] == "25"


def test_structured_content_waits_for_the_revision_that_defines_it() -> None:
    pair = open_mcp(version="2025-03-26")
    result = call(pair, "echo", {"message": "x"})["result"]
    assert "structuredContent" not in result
    assert result["content"] == [{"type": "text", "text": '{"echoed":"x"}'}]


@pytest.mark.parametrize(
    ("name", "arguments", "text"),
    [
        ("boom", None, "Tool execution error: kaput"),
        ("refuse", {"reason": "no"}, "refused: no"),
        ("picky", None, "picky says no"),
        ("add", {"a": "x"}, "Invalid params for tool 'add': a: Input should be a valid integer"),
        ("add", {}, "Invalid params for tool 'add': a: Field required"),
    ],
)
def test_tool_failures_and_invalid_arguments_are_error_results(
    name: str, arguments: Any, text: str
) -> None:
    pair = open_mcp()
    result = call(pair, name, arguments)["result"]
    assert result["isError"] is True
    [block] = result["content"]
    assert block["type"] == "text"
    assert block["text"].startswith(text)


def test_every_invalid_argument_is_listed() -> None:
    pair = open_mcp()
    result = call(pair, "add", {"a": "x", "b": -1, "c": 0})["result"]
    lines = result["content"][0]["text"].splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("b: ")
    assert lines[2].startswith("c: ")


@pytest.mark.parametrize(
    "params",
    [
        {"name": "nope"},
        {"arguments": {}},
        {"name": 3},
        {"name": "add", "arguments": [1, 2]},
        {"name": "add", "arguments": {"a": 1}, "_meta": {"progressToken": 1.5}},
    ],
)
def test_unknown_tools_and_malformed_calls_are_invalid_params(params: dict[str, Any]) -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(request("tools/call", params))
    assert error(answer) == (1, -32602)
    assert pair.calls == []


def test_unknown_tool_message_names_it() -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(request("tools/call", {"name": "nope"}))
    assert answer["error"]["message"] == "Unknown tool: nope"


def test_rpc_errors_other_than_tool_errors_stay_json_rpc_errors() -> None:
    pair = open_mcp()
    answer = call(pair, "custom")
    assert answer["error"] == {"code": -31418, "message": "teapot", "data": [1, 2]}
    assert call(pair, "opaque")["error"]["code"] == -32603
    assert call(pair, "not_a_number")["error"]["code"] == -32603


def test_masked_errors_keep_the_correlation_id_in_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pair = ConnectionPair(mcp_app())
    pair.server.mask_errors = True
    pair.client.connect("localhost", "/", subprotocols=[SUBPROTOCOL])
    pair.pump()
    pair.server.accept(SUBPROTOCOL)
    pair.pump()
    pair.send_raw(request("initialize", INIT_PARAMS))
    pair.send_raw(notification("notifications/initialized"))
    with caplog.at_level("ERROR", logger="securemcp.protocol"):
        text = call(pair, "boom")["result"]["content"][0]["text"]
    assert "kaput" not in text
    assert text.startswith("Tool execution error (correlation id ")
    correlation = text.removeprefix("Tool execution error (correlation id ").rstrip(")")
    assert correlation in caplog.text


def test_duplicate_ids_in_flight_are_refused() -> None:
    pair = open_mcp()
    pair.server.receive_data(
        text_frame(request("tools/call", {"name": "echo", "arguments": {"message": "a"}}, 9))
    )
    pair.server.receive_data(
        text_frame(request("tools/call", {"name": "echo", "arguments": {"message": "b"}}, 9))
    )
    [refused] = parse_server_messages(pair.server.data_to_send())
    assert error(refused) == (9, -32600)
    assert pair.server.calls_in_flight == 1


def test_the_client_core_speaks_json_rpc_2_when_told() -> None:
    pair = open_mcp()
    event = pair.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
    assert isinstance(event, ResponseReceived)
    assert event.result["content"] == [{"type": "text", "text": "2"}]
    event = pair.request("tools/call", {"name": "missing"})
    assert isinstance(event, ErrorReceived)
    assert event.code == -32602


def client_messages(data: bytes) -> list[Any]:
    """Unmask and parse what a client core wrote (unfragmented text frames, short ones)."""
    messages = []
    while data:
        length = data[1] & 0x7F
        assert length < 126
        mask, payload = data[2:6], data[6 : 6 + length]
        messages.append(json.loads(bytes(b ^ mask[i % 4] for i, b in enumerate(payload))))
        data = data[6 + length :]
    return messages


def test_the_client_core_answers_server_requests_in_json_rpc_2() -> None:
    pair = open_mcp()
    pair.server.notify("notifications/message", {"level": "info"})
    pair.pump()
    [note] = pair.take_client_events()
    assert isinstance(note, NotificationReceived)
    assert note.method == "notifications/message"
    # Some MCP servers ping their clients: {} back; anything else is not served.
    pair.client.receive_data(server_frame(b'{"jsonrpc":"2.0","id":"s1","method":"ping"}'))
    pair.client.receive_data(server_frame(b'{"jsonrpc":"2.0","id":2,"method":"roots/list"}'))
    assert client_messages(pair.client.data_to_send()) == [
        {"jsonrpc": "2.0", "id": "s1", "result": {}},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "error": {"code": -32601, "message": "Unknown method: roots/list"},
        },
    ]
    pair.client.notify("notifications/initialized")
    assert client_messages(pair.client.data_to_send()) == [
        {"jsonrpc": "2.0", "method": "notifications/initialized"}
    ]


# Cancellation


def start_call(
    pair: ConnectionPair, name: str, arguments: Any, request_id: Any = 1, **extra: Any
) -> ToolCall:
    params = {"name": name, "arguments": arguments, **extra}
    pair.server.receive_data(text_frame(request("tools/call", params, request_id)))
    [event] = pair.server.events_received()
    assert isinstance(event, ToolCall)
    return event


def test_a_cancelled_call_is_reported_and_never_answered() -> None:
    pair = open_mcp()
    running = start_call(pair, "echo", {"message": "x"}, "c1")
    pair.server.receive_data(
        text_frame(notification("notifications/cancelled", {"requestId": "c1", "reason": "bored"}))
    )
    [cancelled] = pair.server.events_received()
    assert isinstance(cancelled, CallCancelled)
    assert cancelled.call is running
    assert cancelled.reason == "bored"
    assert pair.server.data_to_send() == b""
    # A second notification for the same call changes nothing.
    pair.server.receive_data(
        text_frame(notification("notifications/cancelled", {"requestId": "c1"}))
    )
    assert pair.server.events_received() == []
    # The backend's late answer is dropped, and frees the call's slot.
    assert pair.server.calls_in_flight == 1
    pair.server.complete(running, run_tool(running))
    assert pair.server.data_to_send() == b""
    assert pair.server.calls_in_flight == 0
    # The id is free again.
    again = start_call(pair, "add", {"a": 1}, "c1")
    pair.server.complete(again, 1)
    [answer] = parse_server_messages(pair.server.data_to_send())
    assert answer["id"] == "c1"


def test_a_cancelled_call_failed_later_is_dropped_too() -> None:
    pair = open_mcp()
    running = start_call(pair, "boom", {}, 5)
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 5})))
    assert len(pair.server.events_received()) == 1
    pair.server.fail(running, RuntimeError("late"))
    assert pair.server.data_to_send() == b""


def test_cancelling_an_answered_call_is_ignored() -> None:
    pair = open_mcp()
    running = start_call(pair, "add", {"a": 1}, 5)
    pair.server.complete(running, 1)
    pair.server.data_to_send()
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 5})))
    assert pair.server.events_received() == []
    assert pair.server.data_to_send() == b""


def test_a_closing_connection_reports_cancelled_calls_as_unanswered() -> None:
    pair = open_mcp()
    start_call(pair, "echo", {"message": "x"}, 5)
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 5})))
    pair.server.events_received()
    pair.server.receive_eof()
    [closed] = pair.server.events_received()
    assert closed.unanswered == (5,)  # type: ignore[attr-defined]


# Progress


def bind_directly(pair: ConnectionPair, running: ToolCall) -> Progress:
    """Bind the call's progress straight to the core, as a backend does on its loop."""
    progress = running.progress
    assert progress is not None
    progress.bind(
        lambda value, total, message: pair.server.report_progress(running, value, total, message)
    )
    return progress


def test_progress_reports_become_notifications_for_calls_with_a_token() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 3}, 1, _meta={"progressToken": "tok"})
    bind_directly(pair, running)
    result = run_tool(running)
    pair.server.complete(running, result)
    messages = parse_server_messages(pair.server.data_to_send())
    assert messages[:3] == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {
                "progressToken": "tok",
                "progress": step,
                "total": 3,
                "message": f"step {step}",
            },
        }
        for step in (1, 2, 3)
    ]
    assert messages[3]["result"]["content"] == [{"type": "text", "text": "3"}]


def test_progress_must_increase_and_stops_at_completion() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 0}, 1, _meta={"progressToken": 42})
    progress = bind_directly(pair, running)
    assert progress.enabled
    assert progress.report(0.5)
    with pytest.raises(ValueError, match="increase"):
        progress.report(0.5)
    with pytest.raises(ValueError, match="finite"):
        progress.report(float("nan"))
    with pytest.raises(TypeError):
        progress.report(True)
    with pytest.raises(TypeError):
        progress.report(1, "10")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        progress.report(1, 10, 3)  # type: ignore[arg-type]
    pair.server.complete(running, 0)
    assert not progress.enabled
    assert not progress.report(2)
    messages = parse_server_messages(pair.server.data_to_send())
    assert [m.get("method") for m in messages] == ["notifications/progress", None]
    assert messages[0]["params"] == {"progressToken": 42, "progress": 0.5}


def test_progress_stops_when_the_call_is_cancelled() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 0}, 1, _meta={"progressToken": 1})
    progress = bind_directly(pair, running)
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 1})))
    pair.server.events_received()
    assert not progress.report(1)
    assert not pair.server.report_progress(running, 2)
    assert pair.server.data_to_send() == b""


def test_progress_without_a_token_is_a_silent_no_op() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 2}, 1)
    assert running.progress is not None
    assert running.progress.token is None
    assert not running.progress.enabled
    assert not pair.server.report_progress(running, 1)
    pair.server.complete(running, run_tool(running))
    [answer] = parse_server_messages(pair.server.data_to_send())
    assert answer["id"] == 1


def test_progress_messages_wait_for_the_revision_that_defines_them() -> None:
    pair = open_mcp(version="2024-11-05")
    running = start_call(pair, "steps", {"count": 1}, 1, _meta={"progressToken": "t"})
    bind_directly(pair, running)
    pair.server.complete(running, run_tool(running))
    [note, _answer] = parse_server_messages(pair.server.data_to_send())
    assert note["params"] == {"progressToken": "t", "progress": 1, "total": 1}


def test_seed_calls_get_a_progress_that_reports_nothing() -> None:
    pair = ConnectionPair(mcp_app())
    pair.open()
    pair.take_client_events()
    event = pair.invoke("steps", {"count": 2})
    assert isinstance(event, ResponseReceived)
    assert event.result == 2


def test_progress_is_dropped_while_the_output_is_over_its_limit() -> None:
    pair = open_mcp()
    running = start_call(pair, "steps", {"count": 0}, 1, _meta={"progressToken": 1})
    pair.server._output.size = pair.server.limits.max_pending_output
    assert not pair.server.report_progress(running, 1)
    pair.server._output.size = 0
    assert pair.server.report_progress(running, 1)


def test_a_tool_takes_one_progress_at_most() -> None:
    app = SecureMCP("x")

    def twice(a: Progress, b: Progress) -> None: ...

    with pytest.raises(TypeError, match="only one parameter may take the Progress"):
        app.add_tool(twice)
    assert repr(Progress()) == "Progress(token=None, enabled=False)"


def test_notifications_pushed_on_an_mcp_connection_are_json_rpc_2() -> None:
    pair = open_mcp()
    assert pair.server.notify("notifications/tools/list_changed")
    assert parse_server_messages(pair.server.data_to_send()) == [
        {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    ]
