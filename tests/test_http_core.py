"""The sans-I/O plain HTTP/1.1 layer: bodies, limits, keep-alive, pipelining, JSON and SSE.

Driven in memory, as a backend would: bytes in, events out, answers in, bytes out.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securemcp import LocalProtocolError, SecureMCP
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

POST = (
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)


def post(body: bytes, extra: bytes = b"") -> bytes:
    head = POST % len(body)
    return head[:-2] + extra + b"\r\n" + body


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in head)}


def requests(conn: HTTPServerConnection) -> list[HTTPRequestReceived]:
    events = conn.events_received()
    assert all(isinstance(event, HTTPRequestReceived) for event in events), events
    return events  # type: ignore[return-value]


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


# Keep-alive and pipelining


def test_keep_alive_serves_three_requests_on_one_connection() -> None:
    conn = HTTPServerConnection()
    for n in range(3):
        conn.receive_data(post(b'{"n":%d}' % n))
        [request] = requests(conn)
        assert request.body == b'{"n":%d}' % n
        conn.respond(200, b'{"r":%d}' % n)
        answer = conn.data_to_send()
        assert answer.endswith(b'{"r":%d}' % n)
        assert "connection" not in headers_of(answer)
        assert not conn.closed
    assert conn.requests == 3


def test_pipelined_requests_are_answered_in_order() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b"1") + get("/two") + post(b"3"))
    [first] = requests(conn)
    assert first.body == b"1"
    assert conn.buffered == len(get("/two") + post(b"3"))  # the others wait, unparsed
    conn.receive_data(b"")  # nothing new
    assert conn.events_received() == []
    conn.start_stream()
    conn.send_event("progress")
    assert conn.events_received() == []  # still held while the first is answered
    conn.end_stream()
    [second] = requests(conn)
    assert second.path == "/two"
    conn.respond(200, "two")
    [third] = requests(conn)
    assert third.body == b"3"
    conn.respond(200, "three")
    answers = conn.data_to_send()
    assert answers.index(b"data: progress") < answers.index(b"two") < answers.index(b"three")
    assert answers.count(b"HTTP/1.1 200 OK") == 3
    assert conn.buffered == 0


def test_a_large_request_and_the_next_in_one_read() -> None:
    conn = HTTPServerConnection()
    body = b"b" * 20000  # more than h11 is given at a time
    conn.receive_data(post(body) + post(body)[:-10])
    [first] = requests(conn)
    assert first.body == body
    assert conn.buffered > 0
    conn.receive_data(post(body)[-10:])
    conn.respond(200)
    [second] = requests(conn)
    assert second.body == body
    conn.respond(200)
    assert conn.pending_output == len(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n") * 2


def test_pipelined_bytes_past_the_limit_pause_reading() -> None:
    conn = HTTPServerConnection(Limits(max_http_pipelined=100))
    conn.receive_data(post(b"1"))
    requests(conn)
    assert conn.wants_read  # reading on tells a vanished peer
    conn.receive_data(get() * 4)
    assert conn.buffered == len(get()) * 4
    assert not conn.wants_read
    conn.respond(200, "1")
    assert len(requests(conn)) == 1  # one at a time, even when several wait
    assert not conn.wants_read or conn.buffered < 100
    conn.respond(200, "2")
    requests(conn)
    assert conn.wants_read


def test_the_last_request_of_a_connection_says_close() -> None:
    conn = HTTPServerConnection(Limits(max_http_requests=2))
    conn.receive_data(get() + get())
    requests(conn)
    conn.respond(200, "1")
    assert "connection" not in headers_of(conn.data_to_send())
    requests(conn)
    conn.respond(200, "2")
    assert headers_of(conn.data_to_send())["connection"] == "close"
    assert conn.closed


def test_connection_close_ends_the_connection_after_the_answer() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(get(extra=b"Connection: close\r\n") + get())
    requests(conn)
    conn.respond(200, "bye")
    answer = conn.data_to_send()
    assert headers_of(answer)["connection"] == "close"
    assert conn.closed
    assert conn.events_received() == []  # the request after it is never read


@pytest.mark.parametrize("keep_alive", [b"", b"Connection: keep-alive\r\n"])
def test_http_1_0_gets_one_answer_then_close(keep_alive: bytes) -> None:
    conn = HTTPServerConnection()
    conn.receive_data(b"GET / HTTP/1.0\r\n" + keep_alive + b"\r\n")
    [request] = requests(conn)
    assert request.http_version == "1.0"
    conn.respond(200, "old")
    answer = conn.data_to_send()
    assert headers_of(answer)["connection"] == "close"
    assert answer.endswith(b"\r\n\r\nold")
    assert conn.closed


def test_an_sse_answer_to_http_1_0_is_unchunked_and_ends_with_the_connection() -> None:
    # An HTTP/1.0 peer knows no chunked coding: the stream's end is the connection's.
    conn = HTTPServerConnection()
    conn.receive_data(b"POST /mcp HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
    requests(conn)
    conn.start_stream()
    assert conn.send_event("one")
    conn.end_stream()
    answer = conn.data_to_send()
    body = answer.partition(b"\r\n\r\n")[2]
    assert "transfer-encoding" not in headers_of(answer)
    assert headers_of(answer)["connection"] == "close"
    assert body == b"data: one\n\n"
    assert conn.closed


def test_a_close_request_gets_its_stream_then_the_connection_closes() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b"{}", b"Connection: close\r\n") + get())
    requests(conn)
    conn.start_stream()
    conn.send_event("x")
    conn.end_stream()
    answer = conn.data_to_send()
    assert headers_of(answer)["transfer-encoding"] == "chunked"
    assert headers_of(answer)["connection"] == "close"
    assert answer.endswith(b"0\r\n\r\n")
    assert conn.closed
    assert conn.events_received() == []  # the GET after it is never read


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-evil", "a\r\nset-cookie: stolen=1"),
        ("x-evil", "a\nb"),
        ("x-evil", "nul\x00"),
        ("x evil", "space in the name"),
        ("x-evil:", "colon in the name"),
        ("", "no name"),
        ("x-evil", "not latin-1: \u2603"),
    ],
)
def test_an_answer_header_that_could_split_the_head_is_refused(name: str, value: str) -> None:
    # The application's bug, never the peer's: refused before a byte goes out.
    conn = HTTPServerConnection()
    conn.receive_data(get())
    requests(conn)
    with pytest.raises(LocalProtocolError):
        conn.respond(200, "{}", [(name, value)])
    with pytest.raises(LocalProtocolError):
        conn.start_stream(headers=[(name, value)])
    assert conn.data_to_send() == b""
    conn.respond(200, "{}", [("x-fine", "  trimmed\t")])
    assert headers_of(conn.data_to_send())["x-fine"] == "trimmed"


def test_a_status_outside_the_three_digits_is_refused() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(get())
    requests(conn)
    with pytest.raises(LocalProtocolError):
        conn.respond(1000, "{}")
    with pytest.raises(LocalProtocolError):
        conn.start_stream(204)
    conn.respond(299, "{}")  # a code without a standard phrase still goes out
    assert conn.data_to_send().startswith(b"HTTP/1.1 299 \r\n")


def test_expect_100_continue_is_answered_before_the_body() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b"12345", b"Expect: 100-continue\r\n")[:-5])
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.events_received() == []
    conn.receive_data(b"12345")
    [request] = requests(conn)
    assert request.body == b"12345"
    conn.respond(200, "{}")
    assert conn.data_to_send().startswith(b"HTTP/1.1 200 OK\r\n")


def test_expect_100_continue_over_the_limit_gets_413_and_no_continue() -> None:
    conn = HTTPServerConnection(Limits(max_http_body=4))
    conn.receive_data(post(b"12345", b"Expect: 100-continue\r\n")[:-5])
    answer = conn.data_to_send()
    assert status_of(answer) == 413
    assert b" 100 " not in answer


# SSE answers


def test_an_sse_answer_is_exact_bytes() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b"{}"))
    requests(conn)
    conn.start_stream(headers=[("Mcp-Session-Id", "s1"), ("Content-Length", "99")])
    assert conn.send_event('{"progress":1}')
    assert conn.send_event(b"two\nlines", event="message", event_id="7")
    conn.end_stream()
    assert conn.data_to_send() == (
        b"HTTP/1.1 200 OK\r\n"
        b"mcp-session-id: s1\r\n"
        b"content-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
        b'16\r\ndata: {"progress":1}\n\n\r\n'
        b"2c\r\nevent: message\nid: 7\ndata: two\ndata: lines\n\n\r\n"
        b"0\r\n\r\n"
    )
    assert not conn.closed


def test_sse_event_fields_cannot_inject_lines() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(get())
    requests(conn)
    conn.start_stream(headers=[("Cache-Control", "no-store")])
    conn.send_event("a\r\nb", event="x\ndata: evil", event_id="1\r2")
    out = conn.data_to_send()
    assert b"cache-control: no-store\r\n" in out
    assert b"no-cache" not in out
    assert b"event: x data: evil\nid: 1 2\ndata: a\ndata: b\n\n" in out


def test_a_peer_closing_mid_stream_is_reported() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b"{}"))
    requests(conn)
    conn.start_stream()
    conn.send_event("working")
    conn.receive_eof()
    assert conn.events_received() == [HTTPAborted("connection lost before the answer was complete")]
    assert conn.closed
    assert not conn.send_event("too late")
    conn.end_stream()  # harmless once closed
    conn.receive_eof()
    assert conn.events_received() == []


def test_a_peer_closing_before_the_answer_is_reported() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b"{}"))
    requests(conn)
    conn.receive_eof()
    [aborted] = conn.events_received()
    assert isinstance(aborted, HTTPAborted)
    with pytest.raises(LocalProtocolError):
        conn.respond(200)


def test_a_peer_closing_between_requests_is_a_clean_end() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(get())
    requests(conn)
    conn.respond(200)
    conn.receive_eof()
    assert conn.closed
    assert conn.events_received() == []


def test_a_peer_closing_mid_request_gets_no_answer() -> None:
    conn = HTTPServerConnection()
    conn.receive_data(post(b"12345")[:-2])
    conn.receive_eof()
    assert conn.closed
    assert conn.events_received() == []
    assert conn.data_to_send() == b""


def test_answers_out_of_turn_are_refused() -> None:
    conn = HTTPServerConnection()
    with pytest.raises(LocalProtocolError, match="respond"):
        conn.respond(200)
    with pytest.raises(LocalProtocolError, match="start_stream"):
        conn.start_stream()
    conn.receive_data(get())
    requests(conn)
    with pytest.raises(LocalProtocolError, match="send_event"):
        conn.send_event("x")
    with pytest.raises(LocalProtocolError, match="end_stream"):
        conn.end_stream()
    conn.respond(599, "odd")  # a status without a phrase
    assert conn.data_to_send().startswith(b"HTTP/1.1 599 \r\n")
    conn.close()
    assert conn.closed
    conn.close()


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

heads = st.builds(
    lambda method, target, version, headers, body: (
        method + b" " + target + b" " + version + b"\r\n" + b"".join(headers) + b"\r\n" + body
    ),
    st.sampled_from([b"GET", b"POST", b"DELETE", b"PUT", b"HEAD", b"G\x00T", b""]),
    st.sampled_from([b"/", b"/mcp", b"*", b"/a b", b"http://x/mcp", b""]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/1.1 x"]),
    st.lists(
        st.sampled_from(
            [
                b"Host: x\r\n",
                b"Content-Length: 3\r\n",
                b"Content-Length: 300\r\n",
                b"Content-Length: -1\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"Connection: close\r\n",
                b"Expect: 100-continue\r\n",
                b"Upgrade: websocket\r\n",
                b" folded\r\n",
                b"bad header\r\n",
            ]
        ),
        max_size=10,
    ),
    st.binary(max_size=64) | st.just(b"3\r\nabc\r\n0\r\n\r\n"),
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
