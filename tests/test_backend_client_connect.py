"""WebSocketClient opening its connection, over TLS, and against real servers.

Refused upgrades, closed ports, silent servers and servers hanging up mid
handshake, against :class:`~tests.mini_server.MiniServer`; bad arguments; TLS
round trips and an untrusted certificate; the seed README's snippet against the
real server backend; a server written with the independent ``websockets``
library. On asyncio and trio.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme

from securemcp import (
    ConnectionClosed,
    HandshakeRejected,
    InvalidParams,
    LocalProtocolError,
    RequestTimeout,
    SecureMCP,
    SecureMCPError,
    ToolError,
    ToolNotFound,
)
from securemcp.backends.client import WebSocketClient
from securemcp.backends.server import WebSocketTransport

from .mini_server import LIMIT, MiniServer, make_app, running


@asynccontextmanager
async def real_server(app: SecureMCP, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Run the real server backend (``WebSocketTransport``) on a free port; yield the port."""
    transport = WebSocketTransport(app, ssl=tls)
    async with anyio.create_task_group() as tg:
        yield await tg.start(transport.serve, "127.0.0.1", 0)
        tg.cancel_scope.cancel()


# The seed README's snippet, against the real server backend


@pytest.mark.anyio
async def test_seed_readme_client_snippet_runs_as_written() -> None:
    app = SecureMCP("my-websocket-app")

    @app.tool()
    async def my_tool(param: str) -> dict[str, str]:
        return {"got": param}

    with anyio.fail_after(LIMIT):
        async with real_server(app) as port:
            # The seed README's code; only the port differs (tests use a free one).
            from securemcp.transport import WebSocketClient

            async with WebSocketClient(f"ws://localhost:{port}") as client:
                tools = await client.list_tools()
                result = await client.invoke_tool("my_tool", {"param": "value"})
    assert [tool["name"] for tool in tools] == ["my_tool"]
    assert result == {"got": "value"}


@pytest.mark.anyio
async def test_against_the_real_server_backend(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_contexts
    results: dict[int, Any] = {}

    async def call(client: WebSocketClient, value: int) -> None:
        results[value] = await client.invoke_tool("add", {"a": value, "b": 1000})

    with anyio.fail_after(LIMIT):
        async with (
            real_server(make_app(), tls=server_ctx) as port,
            WebSocketClient(f"wss://localhost:{port}", ssl=client_ctx) as client,
        ):
            assert await client.invoke_tool("echo", {"message": "hi"}) == {"echoed": "hi"}
            async with anyio.create_task_group() as tg:
                for value in range(50):
                    tg.start_soon(call, client, value)
            with pytest.raises(ToolNotFound):
                await client.invoke_tool("nope")
            with pytest.raises(InvalidParams):
                await client.invoke_tool("add", {"a": 1})
            with pytest.raises(ToolError) as failed:
                await client.invoke_tool("boom")
            assert await client.ping() >= 0
            assert client.welcome is not None
    assert results == {value: value + 1000 for value in range(50)}
    assert failed.value.code == -32000
    assert client.close_code == 1000


# Opening the connection


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 503])
async def test_refused_upgrade_raises_handshake_rejected(status: int) -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(reject=status)) as (_, url):
            with pytest.raises(HandshakeRejected) as rejected:
                async with WebSocketClient(url):
                    pytest.fail("the upgrade was refused")  # pragma: no cover
    assert rejected.value.status_code == status
    assert rejected.value.body == b"go away"
    assert isinstance(rejected.value, SecureMCPError)


@pytest.mark.anyio
async def test_closed_port_raises_connection_refused_promptly() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with anyio.fail_after(LIMIT), pytest.raises(ConnectionRefusedError) as refused:
        async with WebSocketClient(f"ws://127.0.0.1:{port}"):
            pytest.fail("nothing listens there")  # pragma: no cover
    assert f"127.0.0.1:{port}" in str(refused.value)
    # A name may resolve to several addresses (::1 and 127.0.0.1): still one plain error.
    with anyio.fail_after(LIMIT), pytest.raises(ConnectionRefusedError):
        async with WebSocketClient(f"ws://localhost:{port}"):
            pytest.fail("nothing listens there")  # pragma: no cover


@pytest.mark.anyio
async def test_silent_server_hits_the_connect_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(handshake="silent")) as (_, url):
            client = WebSocketClient(url, connect_timeout=0.2)
            with pytest.raises(RequestTimeout, match="could not connect"):
                async with client:
                    pytest.fail("no handshake answer came")  # pragma: no cover
            with pytest.raises(LocalProtocolError, match="not connected"):
                await client.ping()


@pytest.mark.anyio
async def test_server_hanging_up_during_handshake_raises_connection_closed() -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(handshake="eof")) as (_, url):
            with pytest.raises(ConnectionClosed) as closed:
                async with WebSocketClient(url):
                    pytest.fail("the server hung up")  # pragma: no cover
    assert closed.value.close_code == 1006


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("http://example.com", {}, "unsupported URL scheme"),
        ("ws://user:pw@example.com", {}, "credentials"),
        ("ws://example.com/#frag", {}, "fragment"),
        ("ws:///path", {}, "no host"),
        ("ws://example.com:99999", {}, "invalid port"),
        ("ws://example.com", {"ssl": True}, "only valid with a wss"),
        ("wss://example.com", {"ssl": False}, "needs TLS"),
        ("ws://example.com", {"headers": {"Host": "x"}}, "set by the WebSocket handshake"),
        ("ws://example.com", {"headers": [("X-A", "a\r\nB: b")]}, "invalid characters"),
        ("ws://example.com", {"headers": {"bad name": "x"}}, "invalid header name"),
        ("ws://example.com", {"max_queued_notifications": 0}, "at least 1"),
    ],
)
def test_bad_arguments_raise_value_error(url: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebSocketClient(url, **kwargs)


def test_subprotocols_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        WebSocketClient("ws://example.com", subprotocols="mcp")


def test_url_defaults_and_repr() -> None:
    client = WebSocketClient("wss://Example.com/a?b=1")
    assert repr(client) == "<WebSocketClient wss://Example.com/a?b=1 unconnected>"
    assert not client.closed


# TLS


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client that trusts it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.anyio
async def test_tls_round_trip(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_contexts
    with anyio.fail_after(LIMIT):
        async with (
            running(tls=server_ctx) as (_, url),
            WebSocketClient(url, ssl=client_ctx) as client,
        ):
            assert url.startswith("wss://")
            assert await client.invoke_tool("echo", {"message": "secret"}) == {"echoed": "secret"}
    assert client.close_code == 1000


@pytest.mark.anyio
async def test_tls_untrusted_certificate_is_refused(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = tls_contexts
    with anyio.fail_after(LIMIT):
        async with running(tls=server_ctx) as (_, url):
            with pytest.raises(ssl.SSLCertVerificationError):
                async with WebSocketClient(url):  # the system trust store: no test CA
                    pytest.fail("the certificate is not trusted")  # pragma: no cover


# Interop with an independent server


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # websockets' server is asyncio-only
async def test_interop_with_a_websockets_server(anyio_backend: str) -> None:
    from websockets.asyncio.server import ServerConnection as WSConnection
    from websockets.asyncio.server import serve

    async def handler(websocket: WSConnection) -> None:
        # The seed dialect as the original server spoke it.
        welcome = {"message": "Connected to seed", "tools": ["echo"]}
        await websocket.send(json.dumps({"id": "welcome", "result": welcome}))
        await websocket.send(json.dumps({"method": "hello", "params": {"from": "seed"}}))
        async for raw in websocket:
            message = json.loads(raw)
            answer: dict[str, Any] = {"id": message["id"]}
            if message["method"] == "list_tools":
                answer["result"] = {"tools": [{"name": "echo", "description": "Echo"}]}
            elif message["method"] == "ping":
                answer["result"] = {"pong": True}
            elif message["params"]["tool_name"] == "echo":
                answer["result"] = {"echoed": message["params"]["params"]["message"]}
            else:
                answer["error"] = {"code": -32601, "message": "Tool not found"}
            await websocket.send(json.dumps(answer))

    with anyio.fail_after(LIMIT):
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with WebSocketClient(f"ws://127.0.0.1:{port}") as client:
                tools = await client.list_tools()
                echoed = await client.invoke_tool("echo", {"message": "hi"})
                await client.ping()
                with pytest.raises(ToolNotFound):
                    await client.invoke_tool("missing")
                note = await client.notifications().__anext__()
                welcome = client.welcome
    assert tools == [{"name": "echo", "description": "Echo"}]
    assert echoed == {"echoed": "hi"}
    assert note == ("hello", {"from": "seed"})
    assert welcome is not None
    assert welcome.tools == ("echo",)
    assert client.close_code == 1000
