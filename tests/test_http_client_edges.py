"""HTTPClient against a scripted HTTP server: the answers no well-behaved server gives.

The server is a raw anyio listener that reads each request with h11 and writes
whatever bytes the test's script says (or closes the connection), so that the
client's handling of stale keep-alive connections, cut-short answers, bad JSON,
HTTP errors and the fallback from ``server/discover`` is tested on its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import h11
import pytest

from securemcp.backends.http_client import MODERN_PROTOCOL_VERSION
from securemcp.errors import ConnectionClosed, InternalError, MethodNotFound
from securemcp.transport import HTTPClient, HTTPRejected

LIMIT = 10

INIT_RESULT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "scripted", "version": "0"},
}


@dataclass
class Request:
    method: str
    headers: dict[str, str]
    body: Any
    connection: int


Reply = tuple[bytes, bool] | None
"""Raw response bytes and whether to close afterwards; ``None`` closes without answering."""


def json_reply(message: Any, status: int = 200, close: bool = False, **headers: str) -> Reply:
    body = json.dumps(message).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body, close


def sse_reply(*messages: Any, end: bool = True) -> Reply:
    events = b"".join(
        b"event: message\r\ndata: " + json.dumps(m).encode() + b"\r\n\r\n" for m in messages
    )
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = f"{len(events):x}\r\n".encode() + events + b"\r\n"
    return head + chunk + (b"0\r\n\r\n" if end else b""), not end


def result(request: Request, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request.body["id"], "result": value}


@dataclass
class Scripted:
    script: Callable[[Request], Reply]
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        async with stream:
            while True:
                conn = h11.Connection(h11.SERVER)
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        try:
                            conn.receive_data(await stream.receive())
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            return
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                seen = Request(
                    request.method.decode(),
                    {k.decode(): v.decode() for k, v in request.headers},
                    json.loads(body) if body else None,
                    number,
                )
                self.requests.append(seen)
                reply = self.script(seen)
                if reply is None:
                    return
                data, close = reply
                await stream.send(data)
                if close:
                    return


@asynccontextmanager
async def scripted(script: Callable[[Request], Reply]) -> AsyncIterator[Scripted]:
    server = Scripted(script)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.url = f"http://127.0.0.1:{port}/mcp"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.serve)
        yield server
        tg.cancel_scope.cancel()


def legacy(extra: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
    """A 2025-06-18 server: discover is unknown, initialize works, the rest is ``extra``."""

    def script(request: Request) -> Reply:
        body = request.body
        if request.method == "DELETE":
            return b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n", False
        if body.get("method") == "server/discover":
            error = {"code": -32601, "message": "Method not found"}
            return json_reply({"jsonrpc": "2.0", "id": body["id"], "error": error}, 404)
        if body.get("method") == "initialize":
            return json_reply(result(request, INIT_RESULT), mcp_session_id="s-1")
        if "id" not in body:
            return b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", False
        return extra(request)

    return script


@pytest.mark.anyio
async def test_falls_back_to_initialize_and_reuses_connections() -> None:
    def tools(request: Request) -> Reply:
        if request.body["method"] == "tools/list" and request.connection == 1:
            # Answer, then drop the keep-alive connection without saying so.
            return json_reply(result(request, {"tools": [{"name": "a"}]}), close=True)
        return json_reply(result(request, {"tools": [{"name": "b"}]}))

    with anyio.fail_after(LIMIT):
        async with scripted(legacy(tools)) as server, HTTPClient(server.url) as client:
            first = await client.list_tools()
            second = await client.list_tools()
    assert client.protocol_version == "2025-06-18"
    assert client.session_id == "s-1"
    assert [first, second] == [[{"name": "a"}], [{"name": "b"}]]
    methods = [r.body["method"] if r.body else r.method for r in server.requests]
    assert methods == [
        "server/discover",
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/list",
        "DELETE",
    ]
    # One connection until the server dropped it; the retry opened a second.
    assert [r.connection for r in server.requests] == [1, 1, 1, 1, 2, 2]
    later = server.requests[3].headers
    assert later["mcp-session-id"] == "s-1"
    assert later["mcp-protocol-version"] == "2025-06-18"
    assert "mcp-protocol-version" not in server.requests[1].headers


@pytest.mark.anyio
async def test_modern_headers_and_envelope() -> None:
    def modern(request: Request) -> Reply:
        if request.body["method"] == "server/discover":
            return json_reply(result(request, {"supportedVersions": [MODERN_PROTOCOL_VERSION]}))
        return json_reply(result(request, {"content": [{"type": "text", "text": "ok"}]}))

    with anyio.fail_after(LIMIT):
        async with scripted(modern) as server, HTTPClient(server.url) as client:
            called = await client.call_tool("wéird name", {"x": 1})
    assert called.text == "ok"
    discover, call = server.requests
    assert discover.headers["mcp-method"] == "server/discover"
    assert call.headers["mcp-protocol-version"] == MODERN_PROTOCOL_VERSION
    assert call.headers["mcp-method"] == "tools/call"
    assert call.headers["mcp-name"] == "=?base64?d8OpaXJkIG5hbWU=?="
    meta = call.body["params"]["_meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == MODERN_PROTOCOL_VERSION
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    assert "mcp-session-id" not in call.headers
    assert client.server_info is not None
    assert client.server_info.name == ""


@pytest.mark.anyio
async def test_modern_only_refuses_a_legacy_server() -> None:
    with anyio.fail_after(LIMIT):
        async with scripted(legacy(lambda _: None)) as server:
            client = HTTPClient(server.url, protocol="modern")
            with pytest.raises(MethodNotFound):
                await client.connect()
    assert client.closed


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (lambda r: None, ConnectionClosed, "without an answer"),
        (lambda r: (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 3\r\n\r\n{x}", False), InternalError, "not valid JSON"),
        (lambda r: (b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 4\r\n\r\noops", False), HTTPRejected, "HTTP 500"),
        (lambda r: (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 10\r\n\r\n{}", True), ConnectionClosed, "short"),
        (lambda r: sse_reply({"jsonrpc": "2.0", "method": "x"}, end=False), ConnectionClosed,
         "short"),
        (lambda r: sse_reply(), ConnectionClosed, "without an answer"),
        (lambda r: (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Content-Length: 11\r\n\r\ndata: {x}\n\n", False), InternalError, "not JSON"),
        (lambda r: json_reply(result(r, {"resultType": "input_required"})), InternalError,
         "resultType"),
        (lambda r: json_reply({"jsonrpc": "2.0", "id": r.body["id"]}), InternalError, "neither"),
        (lambda r: (b"garbage\r\n\r\n", True), ConnectionClosed, "protocol error"),
    ],
)  # fmt: skip
async def test_broken_answers(reply: Callable[[Request], Reply], error: type, match: str) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            scripted(legacy(reply)) as server,
            HTTPClient(server.url, max_message_size=1000) as client,
        ):
            with pytest.raises(error, match=match):
                await client.request("tools/list")


@pytest.mark.anyio
async def test_too_large_an_answer() -> None:
    def big(request: Request) -> Reply:
        return json_reply(result(request, {"tools": [], "pad": "x" * 2000}))

    with anyio.fail_after(LIMIT):
        async with (
            scripted(legacy(big)) as server,
            HTTPClient(server.url, max_message_size=1000) as client,
        ):
            with pytest.raises(InternalError, match="exceeds"):
                await client.list_tools()


@pytest.mark.anyio
async def test_notifications_on_a_stream(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, Any]] = []

    async def on_notification(method: str, params: Any) -> None:
        seen.append((method, params))
        if method == "bad":
            raise RuntimeError("handler failed")

    def stream(request: Request) -> Reply:
        return sse_reply(
            {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": 1}},
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
            {"jsonrpc": "2.0", "method": "bad"},
            {"jsonrpc": "2.0", "id": 999, "method": "sampling/createMessage"},
            [1, 2],
            result(request, {"tools": []}),
        )  # fmt: skip

    caplog.set_level(logging.DEBUG, "securemcp.client")
    with anyio.fail_after(LIMIT):
        async with scripted(legacy(stream)) as server:
            async with HTTPClient(server.url, on_notification=on_notification) as client:
                assert await client.list_tools() == []
            async with HTTPClient(server.url) as quiet:
                assert await quiet.list_tools() == []
    assert [method for method, _ in seen] == [
        "notifications/message",
        "notifications/progress",
        "bad",
    ]
    assert "on_notification raised for 'bad'" in caplog.text
    assert "ignored a message" in caplog.text
    assert "dropped notification" in caplog.text


@pytest.mark.anyio
async def test_refused_discover_falls_back_but_auth_does_not() -> None:
    def refuse(request: Request) -> Reply:
        if request.headers.get("mcp-protocol-version") == MODERN_PROTOCOL_VERSION:
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", False
        return legacy(lambda r: json_reply(result(r, {})))(request)

    def forbid(request: Request) -> Reply:
        return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", False

    with anyio.fail_after(LIMIT):
        async with scripted(refuse) as server, HTTPClient(server.url) as client:
            await client.ping()
        assert client.protocol_version == "2025-06-18"
        async with scripted(forbid) as server:
            with pytest.raises(HTTPRejected) as rejected:
                await HTTPClient(server.url).connect()
    assert rejected.value.status_code == 403


@pytest.mark.anyio
async def test_connect_timeout() -> None:
    def hang(request: Request) -> Reply:
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n",
            False,
        )

    with anyio.fail_after(LIMIT):
        async with scripted(hang) as server:
            client = HTTPClient(server.url, connect_timeout=0.3)
            with pytest.raises(TimeoutError, match=r"within 0\.3 s"):
                await client.connect()
    assert client.closed
