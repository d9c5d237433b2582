"""Plain HTTP GETs on the WebSocket port: the core's HTTPRequest event and the backend's handler."""

from __future__ import annotations

import anyio
import pytest

from securemcp import LocalProtocolError, SecureMCP
from securemcp.protocol import ConnectionState, HTTPRequest, ServerConnection
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import UPGRADE_REQUEST

PAGE_REQUEST = b"GET /?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n\r\n"


def _head_and_body(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return status, headers, body


def test_a_plain_get_becomes_an_http_request_event() -> None:
    conn = ServerConnection(SecureMCP("t"), http=True)
    conn.receive_data(PAGE_REQUEST[:20])
    assert conn.events_received() == []
    conn.receive_data(PAGE_REQUEST[20:])
    [request] = conn.events_received()
    assert request == HTTPRequest("GET", "/?x=1", (("host", "localhost"), ("accept", "text/html")))
    assert request.header("Accept") == "text/html"
    assert request.header("cookie") is None
    assert not conn.wants_read
    conn.receive_data(b"more bytes are ignored")
    assert conn.events_received() == []
    conn.respond(200, "<p>hi</p>", [("Content-Type", "text/html"), ("Content-Length", "1")])
    status, headers, body = _head_and_body(conn.data_to_send())
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/html"
    assert headers["content-length"] == str(len(body))
    assert headers["connection"] == "close"
    assert body == b"<p>hi</p>"
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.respond(200)


def test_respond_is_only_for_http_requests() -> None:
    conn = ServerConnection(SecureMCP("t"), http=True)
    conn.receive_data(UPGRADE_REQUEST)
    conn.events_received()  # a HandshakeRequest: respond() is not the answer to it
    with pytest.raises(LocalProtocolError, match="HTTPRequest"):
        conn.respond(200)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "405"),
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
        # A WebSocket upgrade gone wrong is still a bad upgrade.
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n bad continuation\r\n\r\n", "400"),
        (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "400"),
    ],
)
def test_other_requests_are_refused(request_bytes: bytes, status: str) -> None:
    conn = ServerConnection(SecureMCP("t"), http=True)
    conn.receive_data(request_bytes)
    assert conn.events_received() == []
    answer = conn.data_to_send()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    if status == "405":
        assert _head_and_body(answer)[1]["allow"] == "GET"
    assert conn.state is ConnectionState.CLOSED


def test_without_http_a_plain_get_is_still_400() -> None:
    conn = ServerConnection(SecureMCP("t"))
    conn.receive_data(PAGE_REQUEST)
    assert conn.events_received() == []
    assert conn.data_to_send().startswith(b"HTTP/1.1 400 ")


async def _fetch(port: int, request: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        received = b""
        with anyio.fail_after(10):
            while True:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return received


def page(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes] | None:
    if request.path == "/":
        return 200, [("Content-Type", "text/html; charset=utf-8")], b"<h1>chat</h1>"
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    return None


@pytest.mark.anyio
async def test_the_transport_serves_pages_and_websockets_on_one_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = SecureMCP("t")

    @app.tool()
    async def echo(text: str) -> str:
        return text

    transport = WebSocketTransport(app, http_handler=page, shutdown_grace=1, close_timeout=2)
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        status, headers, body = _head_and_body(
            await _fetch(port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        )
        assert status.startswith("HTTP/1.1 200")
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert body == b"<h1>chat</h1>"
        missing = await _fetch(port, b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404 ")
        posted = await _fetch(port, b"POST / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert posted.startswith(b"HTTP/1.1 405 ")
        broken = await _fetch(port, b"GET /boom HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert broken.startswith(b"HTTP/1.1 500 ")
        assert b"handler bug" not in broken
        assert "http_handler failed" in caplog.text
        async with WebSocketClient(f"ws://127.0.0.1:{port}") as client:
            assert await client.invoke_tool("echo", {"text": "still a WebSocket server"}) == (
                "still a WebSocket server"
            )
        tg.cancel_scope.cancel()


def test_a_head_request_gets_an_answer_without_a_body() -> None:
    # It used to make receive_data raise: h11 refuses a body in an answer to HEAD.
    conn = ServerConnection(SecureMCP("t"))
    conn.receive_data(b"HE")
    conn.receive_data(b"AD / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = conn.data_to_send()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b"\r\n\r\n")
    assert conn.state is ConnectionState.CLOSED
