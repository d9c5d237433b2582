"""MCP 2026-07-28 (stateless) in the server core: server/discover, requests, results.

Requests served without ``initialize``: server/discover with its cache hint,
tools/list and tools/call with stamped results, progress and cancellation, each
request on its own; and :func:`serve_request`, the per-request function a
Streamable HTTP transport calls. Malformed envelopes and the two eras on one
connection are in ``test_mcp_stateless_eras.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from securemcp import SecureMCP
from securemcp.protocol import ToolCall
from securemcp.protocol.mcp import (
    LATEST_PROTOCOL_VERSION,
    MODERN_PROTOCOL_VERSIONS,
    PROTOCOL_VERSIONS,
    SUPPORTED_VERSIONS,
)
from securemcp.protocol.mcp_stateless import (
    CLIENT_INFO_KEY,
    SERVER_INFO_KEY,
    CacheHint,
    Envelope,
    ToolRun,
    serve_request,
)

from .helpers import parse_server_messages, run_tool, text_frame
from .mcp_helpers import (
    MODERN,
    bind_directly,
    envelope,
    error,
    mcp_app,
    modern,
    notification,
    only,
    stateless,
)

SERVER_INFO = {"name": "demo", "version": "0.1.0"}


def complete(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as the server stamps it at 2026-07-28."""
    return {**result, "resultType": "complete", "_meta": {SERVER_INFO_KEY: SERVER_INFO}}


def test_the_versions() -> None:
    assert MODERN_PROTOCOL_VERSIONS == (MODERN,)
    assert (MODERN, *reversed(PROTOCOL_VERSIONS)) == SUPPORTED_VERSIONS
    assert LATEST_PROTOCOL_VERSION == "2025-11-25"  # initialize still negotiates the handshake era


# server/discover


def test_discover_describes_the_server_without_initialize() -> None:
    pair = stateless()
    answer = only(pair, modern("server/discover"))
    assert answer == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": complete(
            {
                "supportedVersions": list(SUPPORTED_VERSIONS),
                "capabilities": {"tools": {"listChanged": False}},
                "instructions": "Tools for the core tests.",
                "ttlMs": 0,
                "cacheScope": "private",
            }
        ),
    }
    session = pair.server.mcp
    assert session is not None
    assert session.stateless
    assert session.protocol_version is None  # no handshake happened


def test_discover_leaves_instructions_out_without_a_description_and_uses_the_cache_hint() -> None:
    pair = stateless(SecureMCP("bare", version="2.0"))
    assert pair.server.mcp is not None
    pair.server.mcp.cache_hint = CacheHint(60_000, "public")
    result = only(pair, modern("server/discover"))["result"]
    assert "instructions" not in result
    assert (result["ttlMs"], result["cacheScope"]) == (60_000, "public")
    assert result["_meta"] == {SERVER_INFO_KEY: {"name": "bare", "version": "2.0"}}


@pytest.mark.parametrize(
    ("ttl", "scope"), [(-1, "public"), (1.5, "public"), (True, "public"), (0, "shared")]
)
def test_a_cache_hint_is_checked(ttl: Any, scope: Any) -> None:
    with pytest.raises(ValueError, match="must be"):
        CacheHint(ttl, scope)


# Requests without initialize


def test_tools_list_is_served_without_initialize_with_cache_hints() -> None:
    pair = stateless()
    result = only(pair, modern("tools/list"))["result"]
    assert result["resultType"] == "complete"
    assert result["_meta"] == {SERVER_INFO_KEY: SERVER_INFO}
    assert (result["ttlMs"], result["cacheScope"]) == (0, "private")
    by_name = {tool["name"]: tool for tool in result["tools"]}
    # Described as of 2026-07-28: titles, annotations, output schemas.
    assert by_name["shout"]["title"] == "Shout"
    assert by_name["shout"]["annotations"] == {"readOnlyHint": True, "openWorldHint": False}
    assert "outputSchema" in by_name["echo"]
    assert "nextCursor" not in result


def test_tools_list_pages_with_cursors() -> None:
    pair = stateless()
    assert pair.server.mcp is not None
    pair.server.mcp.page_size = 2
    names: list[str] = []
    cursor = None
    for request_id in range(1, 20):
        params: dict[str, Any] = {} if cursor is None else {"cursor": cursor}
        result = only(pair, modern("tools/list", params, request_id))["result"]
        assert result["resultType"] == "complete"
        names += [tool["name"] for tool in result["tools"]]
        cursor = result.get("nextCursor")
        if cursor is None:
            break
    assert names == [tool.name for tool in pair.server._visible_tools()]
    assert error(only(pair, modern("tools/list", {"cursor": "nope"}, 99))) == (99, -32602)


def test_tools_call_is_served_without_initialize() -> None:
    pair = stateless()
    answer = only(pair, modern("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}}, 7))
    assert answer == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": complete({"content": [{"type": "text", "text": "5"}], "isError": False}),
    }


def test_a_structured_result_keeps_structured_content() -> None:
    pair = stateless()
    answer = only(pair, modern("tools/call", {"name": "echo", "arguments": {"message": "hé"}}))
    result = answer["result"]
    assert result["structuredContent"] == {"echoed": "hé"}
    assert json.loads(result["content"][0]["text"]) == {"echoed": "hé"}
    assert result["resultType"] == "complete"
    assert result["isError"] is False
    assert result["_meta"] == {SERVER_INFO_KEY: SERVER_INFO}


def test_a_string_result_is_stamped_too() -> None:
    pair = stateless()
    result = only(pair, modern("tools/call", {"name": "shout", "arguments": {"text": "hi"}}))[
        "result"
    ]
    assert result == complete({"content": [{"type": "text", "text": "HI"}], "isError": False})


@pytest.mark.parametrize(
    ("name", "arguments", "text"),
    [
        ("boom", {}, "Tool execution error: kaput"),
        ("refuse", {"reason": "no"}, "refused: no"),
        ("add", {"a": "x"}, None),  # invalid arguments: a tool error the model sees
    ],
)
def test_tool_failures_are_stamped_error_results(
    name: str, arguments: dict[str, Any], text: str | None
) -> None:
    pair = stateless()
    pair.server.mask_errors = False
    result = only(pair, modern("tools/call", {"name": name, "arguments": arguments}))["result"]
    assert result["isError"] is True
    assert result["resultType"] == "complete"
    assert result["_meta"] == {SERVER_INFO_KEY: SERVER_INFO}
    if text is not None:
        assert result["content"] == [{"type": "text", "text": text}]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"name": "nope"}, -32602),
        ({"name": 3}, -32602),
        ({"name": "add", "arguments": [1]}, -32602),
        ({"name": "add", "arguments": {"a": 1}, "_meta": {"progressToken": 1.5}}, -32602),
        ({"name": "custom"}, -31418),  # a tool's own RPCError stays a protocol error
    ],
)
def test_protocol_errors_of_a_call_are_errors(params: dict[str, Any], code: int) -> None:
    pair = stateless()
    answer = only(pair, modern("tools/call", params, 4))
    assert error(answer) == (4, code)


@pytest.mark.parametrize("method", ["ping", "initialize-ish", "resources/list", "logging/setLevel"])
def test_methods_outside_the_revision_are_not_found(method: str) -> None:
    pair = stateless()
    assert error(only(pair, modern(method, {}, 3))) == (3, -32601)


def test_progress_reaches_the_client_with_messages() -> None:
    pair = stateless()
    params = {"name": "steps", "arguments": {"count": 2}, "_meta": {"progressToken": "t"}}
    pair.server.receive_data(text_frame(modern("tools/call", params, 9)))
    [running] = pair.server.events_received()
    assert isinstance(running, ToolCall)
    assert running.protocol_version == MODERN
    bind_directly(pair, running)
    pair.server.complete(running, run_tool(running))
    messages = parse_server_messages(pair.server.data_to_send())
    assert [m.get("method") for m in messages] == [
        "notifications/progress",
        "notifications/progress",
        None,
    ]
    assert messages[0]["params"] == {
        "progressToken": "t",
        "progress": 1,
        "total": 2,
        "message": "step 1",
    }
    assert messages[2]["result"]["resultType"] == "complete"


def test_a_stateless_call_can_be_cancelled() -> None:
    pair = stateless()
    pair.server.receive_data(
        text_frame(modern("tools/call", {"name": "echo", "arguments": {"message": "x"}}, 5))
    )
    [running] = pair.server.events_received()
    assert isinstance(running, ToolCall)
    pair.server.receive_data(text_frame(notification("notifications/cancelled", {"requestId": 5})))
    assert len(pair.server.events_received()) == 1
    pair.server.complete(running, {"echoed": "x"})
    assert pair.server.data_to_send() == b""


def test_each_request_is_served_on_its_own() -> None:
    # No state carries over: capabilities and client info are per request, and
    # notifications/initialized changes nothing.
    pair = stateless()
    assert pair.send_raw(notification("notifications/initialized")) == []
    first = modern("tools/call", {"name": "add", "arguments": {"a": 1}}, 1)
    first["params"]["_meta"][CLIENT_INFO_KEY] = {"name": "one", "version": "1"}
    second = modern("tools/call", {"name": "add", "arguments": {"a": 2}}, 2)
    del second["params"]["_meta"][CLIENT_INFO_KEY]
    assert only(pair, first)["result"]["content"][0]["text"] == "1"
    assert only(pair, second)["result"]["content"][0]["text"] == "2"
    session = pair.server.mcp
    assert session is not None
    assert session.client_info is None
    assert not session.initialized


# The per-request function on its own (what a Streamable HTTP transport would call)


def test_serve_request_needs_no_connection() -> None:
    app = mcp_app()

    def list_tools(params: dict[str, Any], version: str) -> dict[str, Any]:
        assert version == MODERN
        return {"tools": [{"name": name} for name in sorted(app.tools)]}

    def serve(method: str, params: dict[str, Any]) -> dict[str, Any] | ToolRun:
        return serve_request(
            1,
            method,
            params,
            app=app,
            supported=SUPPORTED_VERSIONS,
            list_tools=list_tools,
            cache=CacheHint(5, "public"),
        )

    listed = serve("tools/list", {"_meta": envelope()})
    assert isinstance(listed, dict)
    assert (listed["ttlMs"], listed["cacheScope"], listed["resultType"]) == (
        5,
        "public",
        "complete",
    )
    run = serve(
        "tools/call", {"name": "add", "arguments": {"a": 1}, "_meta": envelope(progressToken=3)}
    )
    assert isinstance(run, ToolRun)
    assert run.tool is app.get_tool("add")
    assert run.arguments == {"a": 1}
    assert run.progress_token == 3
    assert run.envelope == Envelope(MODERN, {}, {"name": "test", "version": "1"})
