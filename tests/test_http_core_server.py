"""Plain HTTP inside the server core, and the sans-I/O HTTP layer under fuzzed input.

A :class:`ServerConnection` with ``http_methods`` serves plain requests with
keep-alive and still upgrades WebSockets; random bytes and random request heads,
cut anywhere, get bounded answers from the layer alone and inside the core.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securemcp import SecureMCP
from securemcp.protocol import (
    ConnectionClosed,
    ConnectionState,
    HandshakeRequest,
    HTTPAborted,
    HTTPRequest,
    HTTPRequestReceived,
    HTTPServerConnection,
    Limits,
    ServerConnection,
)

from .helpers import UPGRADE_REQUEST
from .http_core_helpers import HEADS as heads
from .http_core_helpers import get, post, status_of

# Through the server core


def _core(**options: object) -> ServerConnection:
    return ServerConnection(SecureMCP("t"), http_methods=("GET", "POST", "DELETE"), **options)  # type: ignore[arg-type]


def test_the_core_serves_plain_http_requests_with_keep_alive() -> None:
    conn = _core()
    data = post(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    conn.receive_data(data[:10])
    # A POST is no upgrade (those are GETs): plain HTTP from its first bytes on.
    assert conn.http is not None
    assert conn.events_received() == []  # nothing before the request is complete
    conn.receive_data(data[10:40])
    conn.receive_data(data[40:])
    [request] = conn.events_received()
    assert isinstance(request, HTTPRequestReceived)
    assert request.body == b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    http = conn.http
    assert http is not None
    assert conn.state.name == "CONNECTING"  # (not narrowed: it changes below)
    http.respond(200, b"{}")
    assert conn.data_to_send().endswith(b"\r\n\r\n{}")
    assert conn.wants_read
    conn.receive_data(get("/page") + b"DELETE /mcp HTTP/1.1\r\nHost: x\r\n\r\n")
    [page] = conn.events_received()
    assert isinstance(page, HTTPRequestReceived)
    assert page.method == "GET"
    http.respond(404)
    [delete] = conn.events_received()
    assert isinstance(delete, HTTPRequestReceived)
    assert delete.method == "DELETE"
    http.start_stream()
    http.send_event("x")
    conn.receive_eof()
    aborted, closed = conn.events_received()
    assert isinstance(aborted, HTTPAborted)
    assert closed == ConnectionClosed(1006, "connection lost", ())
    assert conn.state is ConnectionState.CLOSED
    assert not conn.wants_read
    assert conn.close_expected()


def test_the_core_body_in_the_same_read_as_the_head() -> None:
    conn = _core()
    conn.receive_data(post(b"0123456789") + post(b"abc"))
    [first] = conn.events_received()
    assert isinstance(first, HTTPRequestReceived)
    assert first.body == b"0123456789"
    assert conn.http is not None
    conn.http.respond(200, "1", [("Connection", "keep-alive")])
    [second] = conn.events_received()
    assert isinstance(second, HTTPRequestReceived)
    assert second.body == b"abc"


@pytest.mark.parametrize("first", [2, 5, 10])
def test_a_post_is_served_however_its_first_read_is_cut(first: int) -> None:
    # "PO" cannot tell a POST yet: it goes the upgrade attempt's way, and ends the same.
    conn = _core()
    data = post(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    conn.receive_data(data[:first])
    conn.receive_data(data[first:])
    [request] = conn.events_received()
    assert isinstance(request, HTTPRequestReceived)
    assert request.body == b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'


def test_a_first_post_over_the_header_count_gets_431() -> None:
    conn = _core()
    conn.receive_data(b"POST /mcp HTTP/1.1\r\n" + b"a: b\r\n" * 200 + b"\r\n")
    answer = conn.data_to_send()
    assert status_of(answer) == 431
    assert conn.state is ConnectionState.CLOSED


def test_the_core_still_upgrades_websockets_with_http_on() -> None:
    conn = _core()
    conn.receive_data(UPGRADE_REQUEST)
    [handshake] = conn.events_received()
    assert isinstance(handshake, HandshakeRequest)
    assert conn.http is None
    conn.accept()
    assert conn.data_to_send().startswith(b"HTTP/1.1 101 ")
    assert conn.state is ConnectionState.OPEN


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 100 + b"\r\n", 431),
        (b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ],
)
def test_the_core_refusals_with_http_on(data: bytes, status: int) -> None:
    conn = _core()
    conn.receive_data(data)
    assert status_of(conn.data_to_send()) == status
    assert conn.state is ConnectionState.CLOSED


def test_the_core_close_and_clean_end() -> None:
    conn = _core()
    conn.receive_data(get(extra=b"Connection: close\r\n"))
    conn.events_received()
    assert conn.http is not None
    conn.http.respond(200, "bye")
    assert conn.events_received() == [ConnectionClosed(1000, "HTTP connection done", ())]
    assert conn.state is ConnectionState.CLOSED
    conn2 = _core()
    conn2.receive_data(get())
    conn2.events_received()
    conn2.close()
    assert conn2.state is ConnectionState.CLOSED
    conn2.receive_data(get())
    assert conn2.events_received() == [ConnectionClosed(1000, "HTTP connection done", ())]


def test_the_core_pauses_on_unsent_output() -> None:
    conn = _core(limits=Limits(max_pending_output=1024))
    conn.receive_data(get())
    conn.events_received()
    assert conn.http is not None
    conn.http.start_stream()
    conn.http.send_event("x" * 2000)
    assert not conn.wants_read
    conn.receive_data(get())  # what a backend read anyway waits
    assert conn.events_received() == []
    conn.data_to_send()
    assert conn.wants_read


def test_without_http_methods_the_core_is_unchanged() -> None:
    conn = ServerConnection(SecureMCP("t"), http=True)
    conn.receive_data(get())
    [request] = conn.events_received()
    assert isinstance(request, HTTPRequest)
    assert conn.http is None


# Fuzz

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits(
    max_http_body=256, max_handshake_size=1024, max_header_count=8, max_http_pipelined=512
)


def _drive(conn: HTTPServerConnection | ServerConnection, chunks: list[bytes]) -> None:
    out = 0
    for chunk in chunks:
        conn.receive_data(chunk)
        for _ in range(20):
            events = conn.events_received()
            if not events:
                break
            for event in events:
                assert isinstance(
                    event,
                    (
                        HTTPRequestReceived,
                        HTTPAborted,
                        ConnectionClosed,
                        HTTPRequest,
                        HandshakeRequest,
                    ),
                ), event
                if isinstance(event, HTTPRequestReceived):
                    assert len(event.body) <= LIMITS.max_http_body
                    http = conn if isinstance(conn, HTTPServerConnection) else conn.http
                    assert http is not None
                    http.respond(200, b"{}")
        out += len(conn.data_to_send())
        if isinstance(conn, HTTPServerConnection):
            assert conn.buffered <= LIMITS.max_http_pipelined + len(chunk)
    conn.receive_eof()
    conn.events_received()
    out += len(conn.data_to_send())
    # Bounded: at most one answer (or refusal) per request the input could hold.
    assert out <= 400 * (1 + sum(map(len, chunks)) // 16)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_fuzz_random_bytes(chunks: list[bytes]) -> None:
    _drive(HTTPServerConnection(LIMITS), chunks)
    _drive(ServerConnection(SecureMCP("t"), limits=LIMITS, http_methods=["GET", "POST"]), chunks)


@FUZZ
@given(st.lists(heads, min_size=1, max_size=4), st.integers(min_value=1, max_value=64))
def test_fuzz_request_heads(requests_: list[bytes], cut: int) -> None:
    data = b"".join(requests_)
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    _drive(HTTPServerConnection(LIMITS), chunks)
    _drive(ServerConnection(SecureMCP("t"), limits=LIMITS, http_methods=["GET", "POST"]), chunks)
