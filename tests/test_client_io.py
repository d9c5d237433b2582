"""The client's two adapters where the public tests do not reach: uvloop, backpressure,
one timer for many deadlines, progress that outlives its call's timeout, and a
server that floods the client with pings while the client's output is limited.

Each test runs on asyncio and trio (and some on uvloop), against the real
server backend or a small server written here on the sans-I/O core.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme

from securemcp import Context, Progress, RequestTimeout, SecureMCP
from securemcp.backends.client import WebSocketClient
from securemcp.protocol import HandshakeRequest, Limits, ServerConnection
from securemcp.transport import WebSocketTransport

from .helpers import serving
from .mini_server import MiniServer, running

LIMIT = 10  # seconds: every test ends well within this, or fails

UVLOOP = pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")


def make_app() -> SecureMCP:
    app = SecureMCP("client-io")

    @app.tool()
    async def echo(message: str) -> str:
        return message

    @app.tool()
    async def hang(ctx: Context) -> None:
        await anyio.sleep_forever()

    @app.tool()
    async def crawl(progress: Progress) -> None:
        progress.report(1, 2, "started")
        await anyio.sleep_forever()

    return app


@asynccontextmanager
async def real_server(app: SecureMCP | None = None) -> AsyncIterator[str]:
    async with serving(WebSocketTransport(app or make_app())) as port:
        yield f"ws://127.0.0.1:{port}"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [UVLOOP])
async def test_uvloop_gets_the_protocol_path(anyio_backend: Any) -> None:
    results: dict[int, Any] = {}

    async def call(client: WebSocketClient, value: int) -> None:
        results[value] = await client.invoke_tool("echo", {"message": str(value)})

    with anyio.fail_after(LIMIT):
        async with real_server() as url, WebSocketClient(url) as client:
            async with anyio.create_task_group() as tg:
                for value in range(64):
                    tg.start_soon(call, client, value)
            with pytest.raises(RequestTimeout):
                await client.invoke_tool("hang", timeout=0.05)
            assert client.pending_count == 0
            assert await client.ping() >= 0
    assert results == {value: str(value) for value in range(64)}
    assert client.close_code == 1000


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [UVLOOP])
async def test_uvloop_speaks_tls_and_refuses_an_untrusted_certificate(anyio_backend: Any) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with anyio.fail_after(LIMIT):
        async with running(tls=server_ctx) as (_, url):
            async with WebSocketClient(url, ssl=client_ctx) as client:
                assert await client.invoke_tool("echo", {"message": "s"}) == {"echoed": "s"}
            with pytest.raises(ssl.SSLCertVerificationError):
                async with WebSocketClient(url):  # the system trust store: no test CA
                    pytest.fail("the certificate is not trusted")  # pragma: no cover
    assert client.close_code == 1000


@pytest.mark.anyio
async def test_one_timer_serves_deadlines_set_in_any_order() -> None:
    outcomes: dict[str, float] = {}

    async def hang(client: WebSocketClient, limit: float | None, name: str) -> None:
        started = anyio.current_time()
        try:
            await client.invoke_tool("hang", timeout=limit)
        except RequestTimeout:
            outcomes[name] = anyio.current_time() - started

    with anyio.fail_after(LIMIT):
        async with real_server() as url, WebSocketClient(url) as client:
            async with anyio.create_task_group() as tg:
                # The long deadline arms the timer first; the short one re-arms
                # it earlier; once the short one fires, the long one is next.
                tg.start_soon(hang, client, 0.6, "long")
                tg.start_soon(hang, client, None, "forever")
                await anyio.sleep(0.05)
                tg.start_soon(hang, client, 0.1, "short")
                await anyio.sleep(1)
                tg.cancel_scope.cancel()
            assert client.pending_count == 0
            assert await client.invoke_tool("echo", {"message": "alive"}) == "alive"
    assert set(outcomes) == {"long", "short"}
    assert 0.1 <= outcomes["short"] < 0.5
    assert 0.6 <= outcomes["long"] < 1.0


@pytest.mark.anyio
async def test_progress_callbacks_share_their_calls_timeout() -> None:
    updates: list[Any] = []
    with anyio.fail_after(LIMIT):
        async with real_server() as url, WebSocketClient(url, mcp=True) as client:
            with pytest.raises(RequestTimeout):
                await client.call_tool("crawl", on_progress=updates.append, timeout=0.3)
            assert client.pending_count == 0
            assert (await client.call_tool("echo", {"message": "on"})).value() == "on"
    assert [update.message for update in updates] == ["started"]


@pytest.mark.anyio
async def test_a_server_that_stops_reading_holds_callers_back_not_the_connection() -> None:
    """Backpressure: the socket takes no more, so calls time out; the connection lives on."""
    payload = "x" * (256 * 1024)
    failures: list[str] = []

    async def send(client: WebSocketClient) -> None:
        try:
            await client.invoke_tool("echo", {"message": payload}, timeout=0.5)
        except RequestTimeout as exc:
            failures.append(str(exc))

    with anyio.fail_after(LIMIT):
        async with running(MiniServer(handshake="deaf")) as (_, url):
            limits = Limits(max_pending_output=65536)
            client = WebSocketClient(url, close_timeout=0.2, limits=limits)
            async with client:
                async with anyio.create_task_group() as tg:
                    for _ in range(64):
                        tg.start_soon(send, client)
                assert not client.closed
            assert client.close_code == 1006  # the deaf server never answered the close
    assert len(failures) == 64
    assert any(failure.startswith("could not send") for failure in failures)


@asynccontextmanager
async def ping_flood(count: int) -> AsyncIterator[str]:
    """A server that greets each client with ``count`` pings between two notifications."""

    async def serve_one(stream: anyio.abc.ByteStream) -> None:
        conn = ServerConnection(make_app())
        async with stream:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                conn.receive_data(data)
                for event in conn.events_received():
                    if isinstance(event, HandshakeRequest):
                        conn.accept(None, welcome=False)
                        # Two events in the first read: the asyncio client then
                        # defers its flush, and must stop reading meanwhile.
                        conn.notify("flood/start")
                        for _ in range(count):
                            conn.ping(b"p" * 100)
                        conn.notify("flood/over", {"pings": count})
                await stream.send(conn.data_to_send())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve_one)
        yield f"ws://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio", UVLOOP])
async def test_pongs_over_the_output_limit_pause_reading_until_sent(anyio_backend: Any) -> None:
    # 200 pongs are about 21 KB: far over this limit, so the core holds the
    # rest of the input until the adapter has written what it has.
    limits = Limits(max_pending_output=1024)
    with anyio.fail_after(LIMIT):
        async with ping_flood(200) as url, WebSocketClient(url, limits=limits) as client:
            notes = client.notifications()
            first, last = await notes.__anext__(), await notes.__anext__()
            assert await client.ping() >= 0
    assert first == ("flood/start", None)
    assert last == ("flood/over", {"pings": 200})
    assert client.close_code == 1000
