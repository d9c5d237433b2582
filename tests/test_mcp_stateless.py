"""MCP 2026-07-28 (stateless) in the server core: envelopes, server/discover, results, eras."""

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
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY,
    CacheHint,
    Envelope,
    ToolRun,
    serve_request,
)

from .helpers import ConnectionPair, parse_server_messages, run_tool, text_frame
from .mcp_helpers import (
    INIT_PARAMS,
    bind_directly,
    error,
    mcp_app,
    notification,
    open_mcp,
    request,
)

MODERN = "2026-07-28"
SERVER_INFO = {"name": "demo", "version": "0.1.0"}


def envelope(version: Any = MODERN, **extra: Any) -> dict[str, Any]:
    return {
        PROTOCOL_VERSION_KEY: version,
        CLIENT_CAPABILITIES_KEY: {},
        CLIENT_INFO_KEY: {"name": "test", "version": "1"},
        **extra,
    }


def modern(
    method: str, params: dict[str, Any] | None = None, request_id: Any = 1
) -> dict[str, Any]:
    """A 2026-07-28 request: ``params`` plus the ``_meta`` envelope."""
    params = dict(params or {})
    params["_meta"] = {**envelope(), **params.get("_meta", {})}
    return request(method, params, request_id)


def complete(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as the server stamps it at 2026-07-28."""
    return {**result, "resultType": "complete", "_meta": {SERVER_INFO_KEY: SERVER_INFO}}


def stateless(app: SecureMCP | None = None) -> ConnectionPair:
    """An ``mcp`` connection that has not sent anything yet."""
    return open_mcp(app, version=None)


def only(pair: ConnectionPair, message: Any) -> dict[str, Any]:
    [answer] = pair.send_raw(message)
    assert answer["jsonrpc"] == "2.0"
    return answer


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


# Malformed envelopes


@pytest.mark.parametrize(
    "meta",
    [
        {PROTOCOL_VERSION_KEY: MODERN},  # no capabilities
        {PROTOCOL_VERSION_KEY: 20260728, CLIENT_CAPABILITIES_KEY: {}},
        {PROTOCOL_VERSION_KEY: None, CLIENT_CAPABILITIES_KEY: {}},
        {PROTOCOL_VERSION_KEY: MODERN, CLIENT_CAPABILITIES_KEY: []},
        {PROTOCOL_VERSION_KEY: MODERN, CLIENT_CAPABILITIES_KEY: None},
        {PROTOCOL_VERSION_KEY: MODERN, CLIENT_CAPABILITIES_KEY: {}, CLIENT_INFO_KEY: "me"},
    ],
)
def test_a_malformed_envelope_is_invalid_params_and_decides_nothing(meta: dict[str, Any]) -> None:
    pair = stateless()
    answer = only(pair, request("tools/list", {"_meta": meta}, 2))
    assert error(answer) == (2, -32602)
    session = pair.server.mcp
    assert session is not None
    assert not session.stateless
    # The client may still open with initialize.
    assert "result" in only(pair, request("initialize", INIT_PARAMS, 3))


@pytest.mark.parametrize("version", ["1900-01-01", "2025-11-25", "2024-11-05", "", "draft"])
def test_an_unsupported_version_gets_the_defined_error(version: str) -> None:
    pair = stateless()
    answer = only(pair, request("server/discover", {"_meta": envelope(version)}, 8))
    assert answer == {
        "jsonrpc": "2.0",
        "id": 8,
        "error": {
            "code": -32022,
            "message": "Unsupported protocol version",
            "data": {"supported": list(SUPPORTED_VERSIONS), "requested": version},
        },
    }
    session = pair.server.mcp
    assert session is not None
    assert not session.stateless


def test_the_version_is_checked_before_the_capabilities() -> None:
    pair = stateless()
    answer = only(pair, request("tools/list", {"_meta": {PROTOCOL_VERSION_KEY: "1.0"}}))
    assert answer["error"]["code"] == -32602  # both keys are required first
    answer = only(
        pair,
        request("tools/list", {"_meta": {PROTOCOL_VERSION_KEY: "1.0", CLIENT_CAPABILITIES_KEY: 1}}),
    )
    assert answer["error"]["code"] == -32022


@pytest.mark.parametrize(
    "params",
    [
        {},  # no _meta at all
        {"_meta": {"progressToken": 1}},  # a legacy _meta
        {"_meta": "2026-07-28"},
    ],
)
def test_on_a_stateless_connection_every_request_needs_its_envelope(params: Any) -> None:
    pair = stateless()
    assert "result" in only(pair, modern("server/discover"))
    answer = only(pair, request("tools/list", params, 5))
    assert error(answer) == (5, -32602)
    assert "_meta" in answer["error"]["message"]


def test_ping_without_an_envelope_on_a_stateless_connection_is_refused() -> None:
    pair = stateless()
    assert "result" in only(pair, modern("tools/list"))
    assert error(only(pair, request("ping", None, 6))) == (6, -32602)


def test_an_unsupported_version_on_a_stateless_connection_lists_the_stateless_revisions() -> None:
    pair = stateless()
    assert "result" in only(pair, modern("tools/list"))
    answer = only(pair, request("tools/list", {"_meta": envelope("2025-06-18")}, 2))
    assert answer["error"]["data"] == {
        "supported": list(reversed(MODERN_PROTOCOL_VERSIONS)),
        "requested": "2025-06-18",
    }


def test_params_that_are_not_an_object_are_invalid() -> None:
    pair = stateless()
    assert "result" in only(pair, modern("tools/list"))
    assert error(only(pair, request("tools/list", [1, 2], 3))) == (3, -32602)


# The two eras on one connection


def test_initialize_after_a_stateless_request_is_refused_with_the_versions() -> None:
    pair = stateless()
    assert "result" in only(pair, modern("tools/list"))
    answer = only(pair, request("initialize", INIT_PARAMS, 2))
    assert answer["error"]["code"] == -32022
    assert answer["error"]["data"] == {
        "supported": list(reversed(MODERN_PROTOCOL_VERSIONS)),
        "requested": LATEST_PROTOCOL_VERSION,
    }
    session = pair.server.mcp
    assert session is not None
    assert session.protocol_version is None
    # Still served statelessly.
    assert only(pair, modern("tools/list", None, 3))["result"]["resultType"] == "complete"


def test_a_failed_stateless_call_still_decides_the_era() -> None:
    pair = stateless()
    assert error(only(pair, modern("ping"))) == (1, -32601)
    assert only(pair, request("initialize", INIT_PARAMS, 2))["error"]["code"] == -32022


def test_an_enveloped_initialize_is_the_handshake() -> None:
    pair = stateless()
    params = {**INIT_PARAMS, "_meta": envelope()}
    answer = only(pair, request("initialize", params))
    assert answer["result"]["protocolVersion"] == LATEST_PROTOCOL_VERSION
    assert "resultType" not in answer["result"]


def test_a_stateless_request_after_initialize_is_refused() -> None:
    pair = open_mcp()
    answer = only(pair, modern("tools/list", None, 4))
    assert error(answer) == (4, -32600)
    answer = only(pair, modern("server/discover", None, 5))
    assert error(answer) == (5, -32600)
    # The handshake session goes on as before, without resultType.
    result = only(pair, request("tools/list", None, 6))["result"]
    assert "resultType" not in result
    assert "ttlMs" not in result


def test_a_stateless_request_between_initialize_and_initialized_is_refused() -> None:
    pair = open_mcp(version=None)
    assert "result" in only(pair, request("initialize", INIT_PARAMS))
    assert error(only(pair, modern("tools/list", None, 2))) == (2, -32600)


def test_server_discover_without_an_envelope_on_a_fresh_connection_is_legacy() -> None:
    # What a probe without _meta (or a legacy client) sees: today's answer.
    pair = stateless()
    assert error(only(pair, request("server/discover", None, 2))) == (2, -32600)
    assert error(only(pair, request("server/discover", {}, 3))) == (3, -32600)


def test_handshake_results_carry_no_result_type() -> None:
    pair = open_mcp()
    [answer] = pair.send_raw(request("tools/call", {"name": "add", "arguments": {"a": 1}}, 2))
    assert answer["result"] == {"content": [{"type": "text", "text": "1"}], "isError": False}
    [answer] = pair.send_raw(request("tools/call", {"name": "boom"}, 3))
    assert set(answer["result"]) == {"content", "isError"}


def test_a_seed_connection_opening_with_a_stateless_request_switches_to_mcp() -> None:
    pair = ConnectionPair(mcp_app())
    pair.open()  # no subprotocol: the seed dialect
    pair.take_client_events()
    assert pair.server.mcp is None
    answer = only(pair, modern("server/discover"))
    assert answer["result"]["supportedVersions"] == list(SUPPORTED_VERSIONS)
    assert pair.server.mcp is not None
    assert pair.server.mcp.stateless


def test_a_later_stateless_request_on_a_seed_connection_stays_seed() -> None:
    pair = ConnectionPair(mcp_app())
    pair.open()
    assert pair.send_raw({"id": 1, "method": "ping"}) == [{"id": 1, "result": {"pong": True}}]
    [answer] = pair.send_raw(modern("server/discover", None, 2))
    assert answer["error"]["code"] == -32601
    assert pair.server.mcp is None


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
