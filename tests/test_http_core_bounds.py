"""The sans-I/O HTTP layer under a peer that does not read: requests wait for answers to drain.

Pipelined requests are parsed only while fewer than ``Limits.max_pending_output``
bytes of answers are unsent, alone (:class:`HTTPServerConnection`) and inside a
:class:`ServerConnection`; a body in tiny chunks costs its bytes, not an object
each, and so does a head; :meth:`~HTTPServerConnection.respond_last` ends the connection.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence

from securemcp import SecureMCP
from securemcp.protocol import (
    ConnectionClosed,
    ConnectionState,
    HTTPRequestReceived,
    HTTPServerConnection,
    Limits,
    ServerConnection,
)

LIMITS = Limits(max_pending_output=1000)


def get(n: int) -> bytes:
    return f"GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def paths(events: Sequence[object]) -> list[str]:
    return [event.path for event in events if isinstance(event, HTTPRequestReceived)]


def test_pipelined_requests_wait_while_the_answers_are_unsent() -> None:
    conn = HTTPServerConnection(LIMITS)
    conn.receive_data(get(1) + get(2) + get(3))
    assert paths(conn.events_received()) == ["/1"]
    conn.respond(200, b"a" * 2000)  # past max_pending_output: /2 waits
    assert paths(conn.events_received()) == []
    conn.receive_data(get(4))  # what the backend read anyway waits too
    assert paths(conn.events_received()) == []
    answer = conn.data_to_send()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert paths(conn.events_received()) == ["/2"]  # taken: the next one comes
    conn.respond(200, b"small")
    assert paths(conn.events_received()) == ["/3"]  # under the limit: no wait
    conn.respond(200, b"small")
    assert paths(conn.events_received()) == ["/4"]


def test_a_half_closed_peer_is_answered_only_as_it_reads() -> None:
    conn = HTTPServerConnection(LIMITS)
    conn.receive_data(get(1) + get(2))
    conn.events_received()
    conn.respond(200, b"b" * 2000)
    conn.receive_eof()  # the peer sent all it will, and reads nothing yet
    assert paths(conn.events_received()) == []
    assert not conn.closed
    conn.data_to_send()
    assert paths(conn.events_received()) == ["/2"]
    conn.respond(200, b"last")
    assert conn.closed  # its end was read once the requests before it were answered


def test_the_server_connection_pauses_and_resumes_its_http_side() -> None:
    conn = ServerConnection(SecureMCP("t"), limits=LIMITS, http_methods=("GET", "POST"))
    conn.receive_data(get(1) + get(2))
    assert paths(conn.events_received()) == ["/1"]
    http = conn.http
    assert http is not None
    http.respond(200, b"c" * 2000)
    assert paths(conn.events_received()) == []
    assert not conn.wants_read
    chunks = conn.data_to_send_chunks()
    assert b"".join(chunks).startswith(b"HTTP/1.1 200 ")
    assert paths(conn.events_received()) == ["/2"]
    assert conn.wants_read


def test_respond_last_says_close_and_ends_the_connection() -> None:
    conn = ServerConnection(SecureMCP("t"), http_methods=("GET",))
    conn.receive_data(get(1) + get(2))
    conn.events_received()
    http = conn.http
    assert http is not None
    http.respond_last(429, b"too many\n", [("retry-after", "1")])
    answer = conn.data_to_send()
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 429 ")
    assert b"connection: close" in head
    assert b"retry-after: 1" in head
    assert conn.state is ConnectionState.CLOSED
    assert conn.events_received() == [ConnectionClosed(1000, "HTTP connection done", ())]


def test_a_head_in_one_byte_reads_costs_its_bytes() -> None:
    """A slowloris head is held once, not as an object per read (before its 431)."""
    limit = 16 * 1024
    conn = HTTPServerConnection(Limits(max_handshake_size=limit))
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nx-slow: " + b"s" * (limit - 100)
    tracemalloc.start()
    try:
        for byte in head:
            conn.receive_data(bytes([byte]))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # One bytes object per read would hold about 40 bytes per byte of head.
    assert held < 4 * limit, held
    assert conn.events_received() == []
    conn.receive_data(b"s" * 200)
    assert conn.data_to_send().startswith(b"HTTP/1.1 431 ")


def test_a_body_in_one_byte_chunks_costs_its_bytes() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    size = 100_000
    wire = b"1\r\nz\r\n" * size
    tracemalloc.start()
    try:
        for start in range(0, len(wire), 16384):
            conn.receive_data(wire[start : start + 16384])
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # A list of one-byte objects would hold about 40 bytes per byte of body.
    assert held < 3 * size, held
    conn.receive_data(b"0\r\n\r\n")
    [request] = conn.events_received()
    assert isinstance(request, HTTPRequestReceived)
    assert request.body == b"z" * size
