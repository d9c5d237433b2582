"""MCP 2026-07-28 (stateless) in the server core: envelopes, and the two eras on one connection.

A malformed or missing ``_meta`` envelope and an unsupported version get their
defined errors; once a connection has spoken stateless requests or
``initialize``, the other era is refused (and a seed connection opening with a
stateless request switches to MCP).
"""

from __future__ import annotations

from typing import Any

import pytest

from securemcp.protocol.mcp import (
    LATEST_PROTOCOL_VERSION,
    MODERN_PROTOCOL_VERSIONS,
    SUPPORTED_VERSIONS,
)
from securemcp.protocol.mcp_stateless import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    PROTOCOL_VERSION_KEY,
)

from .helpers import ConnectionPair
from .mcp_helpers import (
    INIT_PARAMS,
    MODERN,
    envelope,
    error,
    mcp_app,
    modern,
    only,
    open_mcp,
    request,
    stateless,
)

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
