"""The MCP dialect's tools/list and tools/call in the server core, as exact messages.

Tool objects in registration order and per revision, pages and cursors; call
results as text and structured content, tool failures as error results, and
the errors that stay JSON-RPC errors.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securemcp import SecureMCP
from securemcp.protocol.mcp import SUBPROTOCOL

from .helpers import ConnectionPair, parse_server_messages, text_frame
from .mcp_helpers import INIT_PARAMS, error, mcp_app, notification, open_mcp, request


def call(pair: ConnectionPair, name: str, arguments: Any = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, **extra}
    if arguments is not None:
        params["arguments"] = arguments
    [answer] = pair.send_raw(request("tools/call", params, 7))
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == 7
    return answer


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
