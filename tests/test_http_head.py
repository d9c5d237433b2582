"""The head reader (h11's reader without an h11.Connection) against h11.Connection itself.

``http_head.HeadReader`` calls h11's private head reader. These tests hold it to
what a public ``h11.Connection`` does with the same bytes: the same request, the
same bytes left over, the same error with the same status hint, and, through a
whole ``HTTPServerConnection``, the same answers byte for byte. They run on the
h11 installed, so a change of h11 that parts the two fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemcp.protocol import HTTPRequestReceived, HTTPServerConnection, http_head
from securemcp.protocol.limits import Limits

from .http_core_helpers import HEADS, post
from .test_http_core_server import FUZZ

LIMIT = 1024

HEADS_BY_HAND = [
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF line ends
    b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a blank line first
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  folded\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX : y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/2\r\nHost: x\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nz",
    b"POST / HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    b" GET / HTTP/1.1\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n",  # incomplete
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 2000 + b"\r\n\r\n",  # past the limit
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 2000,  # past the limit, incomplete
    b"",
]


EOF_MODES = ["open", "closed-after", "closed-first"]
"""The input stays open; it ends after the parser has seen every chunk; it ends before."""


def _outcome(
    parser: http_head.HeadReader | h11.Connection, chunks: list[bytes], eof: str
) -> object:
    """What a parser makes of ``chunks`` (and the end of input): its event or its error."""
    feeds = [b"".join(chunks)] if eof == "closed-first" else chunks
    if eof != "open":
        feeds = [*feeds, b""]
    try:
        event: object = h11.NEED_DATA
        if eof == "closed-first":
            for chunk in feeds:
                parser.receive_data(chunk)
            event = parser.next_event()
        for chunk in [] if eof == "closed-first" else feeds:
            parser.receive_data(chunk)
            event = parser.next_event()
            if event is not h11.NEED_DATA:
                break
    except h11.RemoteProtocolError as exc:
        return ("error", str(exc), exc.error_status_hint)
    if isinstance(event, h11.Request):
        return (
            event.method,
            event.target,
            event.headers.raw_items(),
            event.http_version,
            parser.trailing_data,
            parser.they_are_waiting_for_100_continue,
        )
    return type(event) if event is h11.NEED_DATA else repr(event)


def _both(chunks: list[bytes], eof: str) -> tuple[object, object]:
    fast = _outcome(http_head.HeadReader(LIMIT), chunks, eof)
    public = _outcome(h11.Connection(h11.SERVER, max_incomplete_event_size=LIMIT), chunks, eof)
    return fast, public


def test_the_fast_reader_is_the_one_in_use() -> None:
    """The installed h11 is one the reader was checked on (pyproject.toml keeps h11 below 0.17).

    For a new h11: run this module against it and, if it passes, add it to VERIFIED
    and widen the pin.
    """
    assert getattr(h11, "__version__", "").startswith(http_head.VERIFIED)
    assert http_head.FAST
    assert type(http_head.parser(LIMIT)) is http_head.HeadReader


@pytest.mark.parametrize("eof", EOF_MODES)
@pytest.mark.parametrize("data", HEADS_BY_HAND)
def test_a_head_read_whole_or_a_byte_at_a_time_is_read_as_h11_connection_reads_it(
    data: bytes, eof: str
) -> None:
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        fast, public = _both(chunks, eof)
        assert fast == public


def test_a_request_read_with_and_without_a_connection_is_the_same() -> None:
    fast, public = _both([HEADS_BY_HAND[0]], eof="open")
    assert (
        fast
        == public
        == (
            b"POST",
            b"/mcp",
            [(b"Host", b"x"), (b"Content-Length", b"2")],
            b"1.1",
            (b"{}", False),
            False,
        )
    )


@FUZZ
@given(st.lists(HEADS, min_size=1, max_size=3), st.integers(1, 48), st.booleans())
def test_fuzzed_heads_are_read_as_h11_connection_reads_them(
    requests_: list[bytes], cut: int, bare_lf: bool
) -> None:
    data = b"".join(requests_)
    if bare_lf:
        data = data.replace(b"\r\n", b"\n")
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    for eof in EOF_MODES:
        fast, public = _both(chunks, eof)
        assert fast == public


@contextmanager
def _public_h11_only() -> Iterator[None]:
    saved = http_head.FAST
    http_head.FAST = False
    try:
        yield
    finally:
        http_head.FAST = saved


def _transcript(chunks: list[bytes]) -> list[object]:
    """A connection's events and output for ``chunks``, each request answered 200."""
    conn = HTTPServerConnection(
        Limits(max_http_body=256, max_handshake_size=LIMIT, max_header_count=8)
    )
    seen: list[object] = []
    for chunk in [*chunks, None]:
        if chunk is None:
            conn.receive_eof()
        else:
            conn.receive_data(chunk)
        for _ in range(8):  # each answer may let a pipelined request through
            events = conn.events_received()
            if not events:
                break
            seen.extend(events)
            if any(isinstance(event, HTTPRequestReceived) for event in events):
                conn.respond(200, b'{"ok":true}')
        seen.append(conn.data_to_send())
    seen.append(conn.closed)
    return seen


@FUZZ
@given(st.lists(HEADS, min_size=1, max_size=3), st.integers(1, 48))
def test_a_connection_answers_the_same_bytes_with_either_parser(
    requests_: list[bytes], cut: int
) -> None:
    data = b"".join(requests_)
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    fast = _transcript(chunks)
    with _public_h11_only():
        public = _transcript(chunks)
    assert fast == public


@pytest.mark.parametrize("cut", [1, 7, 4096])
def test_a_chunked_body_after_a_fast_head_is_read_by_h11s_connection(cut: int) -> None:
    data = (
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" + post(b"{}")
    )
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    seen = _transcript(chunks)
    bodies = [event.body for event in seen if isinstance(event, HTTPRequestReceived)]
    assert bodies == [b"abcde", b"{}"]
    assert b"".join(part for part in seen if isinstance(part, bytes)).count(b"HTTP/1.1 200 ") == 2
    with _public_h11_only():
        assert _transcript(chunks) == seen
