"""The MCP dialect of the server core: choosing it, the lifecycle, envelopes and ids.

Through in-memory connections and exact messages: the ``mcp`` subprotocol or a
first ``initialize`` selects the dialect; version negotiation and the
``initialized`` gate; invalid envelopes, ids and params; the client core's
JSON-RPC 2.0. tools/list and tools/call are in ``test_mcp_core_tools.py``;
cancellation and progress in ``test_mcp_core_progress.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from securemcp import SecureMCP
from securemcp.protocol import (
    ConnectionState,
    ErrorReceived,
    NotificationReceived,
    ResponseReceived,
    ServerConnection,
)
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION, PROTOCOL_VERSIONS, SUBPROTOCOL

from .helpers import UPGRADE_REQUEST, ConnectionPair, demo_app, parse_server_messages, server_frame
from .mcp_helpers import INIT_PARAMS, error, mcp_app, notification, open_mcp, request

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


def test_notifications_pushed_on_an_mcp_connection_are_json_rpc_2() -> None:
    pair = open_mcp()
    assert pair.server.notify("notifications/tools/list_changed")
    assert parse_server_messages(pair.server.data_to_send()) == [
        {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    ]
