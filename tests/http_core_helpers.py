"""Raw requests and answer parsing for the tests of the sans-I/O HTTP layer."""

from __future__ import annotations

from hypothesis import strategies as st

from securemcp.protocol import HTTPRequestReceived, HTTPServerConnection

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


HEADS = st.builds(
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
"""Requests, well-formed or not, with a body or bytes after them: for the fuzz tests."""
