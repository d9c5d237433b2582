"""The hostile suite over MCP Streamable HTTP: requests built byte by byte, answers read back.

:class:`HTTPPeer` is a :class:`~tests.security.conftest.RawPeer` that reads
HTTP/1.1 answers (``Content-Length`` or chunked, SSE events included);
:func:`mcp_post` builds the POST a 2026-07-28 client sends (routing headers
mirrored from the body). :func:`http_probe` is the HTTP twin of the suite's
WebSocket probe: a real client (:class:`~securemcp.transport.HTTPClient`) must
get correct answers promptly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio

from securemcp.transport import HTTPClient

from .conftest import PROBE_TIMEOUT, RawPeer, Server

MODERN = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}
"""The ``_meta`` envelope of a stateless request."""


def message(method: str, request_id: Any = 1, **params: Any) -> bytes:
    """A 2026-07-28 JSON-RPC request (a notification when ``request_id`` is ``None``)."""
    body: dict[str, Any] = {
        "jsonrpc": "2.0",
        "method": method,
        "params": {**params, "_meta": MODERN},
    }
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body).encode()


def tool_call(name: str, request_id: Any = 1, *headers: tuple[str, str], **arguments: Any) -> bytes:
    """The POST of a ``tools/call`` of ``name`` with ``arguments`` (and more ``headers``)."""
    return mcp_post(message("tools/call", request_id, name=name, arguments=arguments), *headers)


def mcp_post(body: bytes, *headers: tuple[str, str], chunked: bool = False) -> bytes:
    """A POST of ``body`` to ``/mcp`` as a conforming client sends it, plus ``headers``.

    The routing headers are mirrored from an enveloped body; the body goes
    whole after ``Content-Length``, or with ``chunked`` is left for the caller
    to send in chunks (:func:`chunk`).
    """
    lines = [
        "POST /mcp HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
    ]
    lines += [f"{name}: {value}" for name, value in (*_routing(body), *headers)]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if chunked else head + body


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (empty: the last chunk)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _routing(body: bytes) -> list[tuple[str, str]]:
    try:
        parsed = json.loads(body)
        method, params = parsed["method"], parsed["params"]
        version = params["_meta"]["io.modelcontextprotocol/protocolVersion"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return []
    headers = [("MCP-Protocol-Version", version), ("Mcp-Method", method)]
    if method == "tools/call":
        headers.append(("Mcp-Name", params["name"]))
    return headers


@dataclass
class HTTPAnswer:
    """One HTTP answer: status, headers (lower-case names), body (chunks joined)."""

    status: int
    headers: dict[str, str]
    body: bytes
    events: list[Any] = field(default_factory=list)
    """An SSE answer's ``data`` payloads, parsed as JSON, in order."""

    def json(self) -> Any:
        """The JSON-RPC message answered: the body, or an SSE answer's last event."""
        return self.events[-1] if self.events else json.loads(self.body)


class HTTPPeer(RawPeer):
    """A raw peer that reads HTTP/1.1 answers."""

    async def line(self) -> bytes:
        """The next CRLF-terminated line, without its CRLF (EOFError at the end)."""
        while (end := self._buffer.find(b"\r\n")) < 0:
            if not await self._fill():
                raise EOFError("the server closed the connection")
        data = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return data

    async def answer(self) -> HTTPAnswer:
        """The next answer, whole (EOFError if the server closes first)."""
        head = await self.response_head()
        if not head:
            raise EOFError("the server closed the connection")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        status = int(lines[0].split(" ")[1])
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(await self.line(), 16):
                body += await self.receive_exactly(size)
                await self.line()
            await self.line()
        else:
            body = await self.receive_exactly(int(headers.get("content-length", "0")))
        events = []
        if headers.get("content-type", "").startswith("text/event-stream"):
            events = [
                json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")
            ]
        return HTTPAnswer(status, headers, body, events)


async def http_peer(server: Server, request: bytes = b"") -> HTTPPeer:
    """A raw connection to ``server`` that has sent ``request`` (nothing if empty)."""
    stream = await anyio.connect_tcp("127.0.0.1", server.port)
    if request:
        await stream.send(request)
    return HTTPPeer(stream)


def mcp_url(server: Server) -> str:
    """The server's Streamable HTTP endpoint."""
    return f"http://127.0.0.1:{server.port}/mcp"


async def http_probe(server: Server, **options: Any) -> None:
    """A fresh HTTP client gets a correct answer promptly (the WebSocket probe's twin)."""
    with anyio.fail_after(PROBE_TIMEOUT):
        async with HTTPClient(mcp_url(server), **options) as client:
            assert await client.invoke_tool("echo", {"message": "still here"}) == "still here"
