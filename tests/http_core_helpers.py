"""Raw requests and answer parsing for the tests of the sans-I/O HTTP layer."""

from __future__ import annotations

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
