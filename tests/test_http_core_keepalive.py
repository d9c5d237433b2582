"""The sans-I/O plain HTTP/1.1 layer over a connection's life: keep-alive, pipelining, answers.

Several requests on one connection, answered in order; ``Connection: close``
and HTTP/1.0; the answer's head refused when it could split; ``Expect:
100-continue``; SSE answers byte for byte; a peer that leaves mid-answer; calls
out of turn. Driven in memory, as a backend would.
"""

from __future__ import annotations

import pytest

from securemcp import LocalProtocolError
from securemcp.protocol import HTTPAborted, HTTPServerConnection, Limits

from .http_core_helpers import get, headers_of, post, requests, status_of

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
