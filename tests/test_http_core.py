"""The sans-I/O plain HTTP/1.1 layer: request bodies and the limits on heads and bodies.

Driven in memory, as a backend would: bytes in, events out, answers in, bytes out.
Keep-alive, pipelining and SSE answers are in ``test_http_core_keepalive.py``; the
layer inside :class:`ServerConnection`, and the fuzz, in ``test_http_core_server.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from securemcp import LocalProtocolError
from securemcp.protocol import HTTPServerConnection, Limits

from .http_core_helpers import get, headers_of, post, requests, status_of

# Requests with bodies


def test_a_post_with_content_length_becomes_one_event_and_gets_json() -> None:
    conn = HTTPServerConnection()
    data = post(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    conn.receive_data(data[:30])
    assert conn.events_received() == []
    conn.receive_data(data[30:-5])
    assert conn.events_received() == []  # the body is not complete yet
    conn.receive_data(data[-5:])
    [request] = requests(conn)
    assert request.method == "POST"
    assert request.path == "/mcp"
    assert request.http_version == "1.1"
    assert request.body == b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    assert request.header("CONTENT-TYPE") == "application/json"
    assert request.header("mcp-session-id") is None
    assert request.headers[0] == ("host", "x")
    assert conn.answering
    conn.respond(200, b'{"jsonrpc":"2.0","id":1,"result":{}}', [("Mcp-Session-Id", "abc")])
    assert conn.data_to_send() == (
        b"HTTP/1.1 200 OK\r\nmcp-session-id: abc\r\ncontent-type: application/json\r\n"
        b"content-length: 36\r\n\r\n"
        b'{"jsonrpc":"2.0","id":1,"result":{}}'
    )
    assert not conn.closed
    assert not conn.answering


def test_a_chunked_body_is_joined() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"3\r\n", b"abc\r\n", b"4\r\nde", b"fg\r\n", b"0\r\n", b"\r\n"):
        assert conn.events_received() == []
        conn.receive_data(piece)
    [request] = requests(conn)
    assert request.body == b"abcdefg"


@pytest.mark.parametrize("status", [204, 304])
def test_answers_without_content(status: int) -> None:
    conn = HTTPServerConnection()
    conn.receive_data(get() + get())
    requests(conn)
    with pytest.raises(LocalProtocolError, match="no body"):
        conn.respond(status, "x")
    with pytest.raises(LocalProtocolError, match="final status"):
        conn.respond(101)
    conn.respond(status)
    assert conn.data_to_send() == b"HTTP/1.1 %d %s\r\n\r\n" % (
        status,
        b"No Content" if status == 204 else b"Not Modified",
    )
    [next_request] = requests(conn)  # keep-alive goes on
    assert next_request.path == "/"


def test_a_notification_gets_202_without_a_body() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}'))
    requests(conn)
    conn.respond(202)
    assert conn.data_to_send() == b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"


# Limits


def test_a_declared_body_over_the_limit_gets_413_before_it_is_read() -> None:
    conn = HTTPServerConnection(Limits(max_http_body=100))
    conn.receive_data(post(b"x" * 101)[:-101])  # the head only
    answer = conn.data_to_send()
    assert status_of(answer) == 413
    assert headers_of(answer)["connection"] == "close"
    assert conn.closed
    conn.receive_data(b"x" * 101)
    assert conn.data_to_send() == b""
    assert conn.events_received() == []
    assert conn.buffered == 0


def test_a_chunked_body_over_the_limit_gets_413_at_the_limit() -> None:
    conn = HTTPServerConnection(Limits(max_http_body=100))
    conn.receive_data(b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"1e\r\n" + b"y" * 30 + b"\r\n"
    for _ in range(3):
        conn.receive_data(chunk)
        assert conn.data_to_send() == b""
        assert conn._body_size <= 100  # counted as it arrives
    conn.receive_data(chunk)  # 120 bytes: past the limit
    assert status_of(conn.data_to_send()) == 413
    assert conn.closed
    # Nothing past the limit was kept: the body and the parser are dropped.
    assert conn._body == []
    assert conn._h11 is None
    conn.receive_data(chunk * 10)
    assert conn.buffered == 0
    assert conn.data_to_send() == b""


def test_a_huge_chunked_body_in_one_read_is_cut_at_the_limit() -> None:
    limit = 64 * 1024
    conn = HTTPServerConnection(Limits(max_http_body=limit))
    conn.receive_data(b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    kept: list[int] = []

    class Spy(list[bytes | bytearray]):
        # The chunks go into one bytearray: appended once, then grown in place.
        def append(self, data: bytes | bytearray) -> None:
            super().append(data)
            kept.append(sum(map(len, self)))

        def __setitem__(self, index: Any, data: Any) -> None:
            super().__setitem__(index, data)
            kept.append(sum(map(len, self)))

    conn._body = Spy()
    chunk = b"1000\r\n" + b"z" * 4096 + b"\r\n"
    conn.receive_data(chunk * 256)  # 1 MiB in one read
    assert status_of(conn.data_to_send()) == 413
    assert kept[-1] == limit  # the chunk that passed the limit was never kept
    assert conn.buffered == 0
    assert conn._h11 is None


def test_a_header_flood_gets_431() -> None:
    conn = HTTPServerConnection(Limits(max_header_count=10))
    conn.receive_data(get(extra=b"".join(b"h%d: v\r\n" % i for i in range(10))))
    answer = conn.data_to_send()
    assert status_of(answer) == 431
    assert b"more than 10 headers" in answer
    assert conn.closed


def test_an_oversized_head_gets_431_while_it_arrives() -> None:
    conn = HTTPServerConnection(Limits(max_handshake_size=1024))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(40):
        conn.receive_data(b"x-filler: " + b"a" * 40 + b"\r\n")
        if conn.closed:
            break
    assert conn.closed
    assert status_of(conn.data_to_send()) == 431


def test_a_complete_head_over_the_size_limit_gets_431() -> None:
    # A head that arrives whole in one read is measured once parsed.
    conn = HTTPServerConnection(Limits(max_handshake_size=1024))
    conn.receive_data(get(extra=b"x-big: " + b"a" * 1100 + b"\r\n"))
    assert status_of(conn.data_to_send()) == 431


def test_a_slowloris_head_emits_nothing_and_holds_bounded_memory() -> None:
    limits = Limits(max_handshake_size=2048)
    conn = HTTPServerConnection(limits)
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\n" + b"x-slow: " + b"s" * 1800
    for byte in head:
        conn.receive_data(bytes([byte]))
        assert conn.events_received() == []
        assert conn.data_to_send() == b""
        assert conn.wants_read
        assert conn.buffered == 0
        assert conn._h11 is not None
        assert len(conn._h11.trailing_data[0]) <= limits.max_handshake_size
    # The clock is the backend's: the core just waits, and refuses past the limit.
    conn.receive_data(b"s" * 300)
    assert status_of(conn.data_to_send()) == 431
    assert conn.closed


def test_a_second_request_is_measured_too() -> None:
    conn = HTTPServerConnection(Limits(max_header_count=5))
    conn.receive_data(get())
    requests(conn)
    conn.respond(200, "ok")
    conn.data_to_send()
    conn.receive_data(get(extra=b"a: b\r\n" * 5))
    assert status_of(conn.data_to_send()) == 431


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
)
def test_malformed_requests_get_their_status(data: bytes, status: int) -> None:
    conn = HTTPServerConnection()
    conn.receive_data(data)
    answer = conn.data_to_send()
    assert status_of(answer) == status, answer
    assert headers_of(answer)["connection"] == "close"
    assert conn.events_received() == []
    assert conn.closed


def test_content_length_with_transfer_encoding_is_refused_and_closes() -> None:
    # The smuggling shape (RFC 9112 6.3): a front end that frames by
    # Content-Length and a server that frames by the chunks disagree on where
    # the next request starts. Here the chunked reading would see an empty
    # body and then serve "GET /smuggled" as a request of its own.
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%b" % (5 + len(smuggled), smuggled)
    )
    conn = HTTPServerConnection()
    conn.receive_data(data)
    answer = conn.data_to_send()
    assert status_of(answer) == 400, answer
    assert b"Content-Length and Transfer-Encoding together" in answer
    assert headers_of(answer)["connection"] == "close"
    assert answer.count(b"HTTP/1.1 ") == 1
    assert conn.events_received() == []
    assert conn.closed


def test_an_unserved_method_gets_405_with_allow() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(b"PUT /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    answer = conn.data_to_send()
    assert status_of(answer) == 405
    assert headers_of(answer)["allow"] == "GET, POST, DELETE"
    assert conn.closed


def test_a_refused_head_request_gets_no_body() -> None:
    conn = HTTPServerConnection(methods=["get"])
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = conn.data_to_send()
    assert status_of(answer) == 405
    assert answer.endswith(b"\r\n\r\n")
    assert headers_of(answer)["allow"] == "GET"


def test_a_served_head_request_gets_the_length_but_no_body() -> None:
    conn = HTTPServerConnection(methods=["GET", "HEAD"])
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    requests(conn)
    conn.respond(200, "hello", [("Content-Type", "text/plain")])
    answer = conn.data_to_send()
    assert answer.endswith(b"content-length: 5\r\n\r\n")
    assert not conn.closed


def test_a_content_length_body_read_a_byte_at_a_time_is_kept_in_one_buffer() -> None:
    conn = HTTPServerConnection()
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}' * 20
    data = post(body)
    head_end = data.index(b"\r\n\r\n") + 4
    conn.receive_data(data[:head_end])
    for byte in data[head_end:-1]:
        conn.receive_data(bytes([byte]))
        assert len(conn._body) == 1  # one growing buffer, not an object per read
    conn.receive_data(data[-1:])
    [request] = requests(conn)
    assert request.body == body
    assert type(request.body) is bytes
