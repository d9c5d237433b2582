"""The server core through an in-memory client: the handshake and the built-in methods.

The upgrade request as an event, accept (the seed dialect's welcome, subprotocol,
headers) and reject, frames held until the decision, bad upgrades answered 400;
``ping`` and ``list_tools``. Tool calls and notifications are in
``test_server_core_calls.py``; backpressure and closing in ``test_server_core_flow.py``.
"""

from __future__ import annotations

import pytest

from securemcp import LocalProtocolError, SecureMCP
from securemcp.protocol import (
    Connected,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionState,
    HandshakeRequest,
    ResponseReceived,
    ServerConnection,
    Welcome,
)

from .helpers import UPGRADE_REQUEST, ConnectionPair, open_server, parse_server_messages, text_frame

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


@pytest.mark.parametrize(
    "keys",
    [
        [b"abc"],  # not 16 bytes
        [b"AAAAAAAAAAAAAAAAAAAA"],  # 15 bytes
        [b"dGhlIHNhbXBsZSBub25jZ!=="],  # not base64
        [b"dGhlIHNhbXBsZSBub25jZ\x80=="],  # not even ASCII
        [b"dGhlIHNhbXBsZSBub25jZQ==", b"AAAAAAAAAAAAAAAAAAAAAA=="],  # two keys
    ],
)
def test_a_key_that_is_not_one_16_byte_nonce_gets_400(app: SecureMCP, keys: list[bytes]) -> None:
    lines = b"".join(b"Sec-WebSocket-Key: %b\r\n" % key for key in keys)
    request = UPGRADE_REQUEST.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", lines)
    server = ServerConnection(app)
    server.receive_data(request)
    assert server.events_received() == []
    answer = server.data_to_send()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key must be one 16-byte nonce" in answer
    assert server.state is ConnectionState.CLOSED


def test_an_unknown_websocket_version_gets_426_naming_version_13(app: SecureMCP) -> None:
    server = ServerConnection(app)
    server.receive_data(UPGRADE_REQUEST.replace(b"Version: 13", b"Version: 8"))
    assert server.events_received() == []
    answer = server.data_to_send()
    assert answer.startswith(b"HTTP/1.1 426 ")
    head = answer.lower().split(b"\r\n\r\n")[0]
    assert b"\r\nsec-websocket-version: 13\r\n" in head + b"\r\n"
    assert b"connection: close" in head
    assert server.state is ConnectionState.CLOSED


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
