"""The client's keepalive: it pings, and drops a connection whose server stopped answering.

A server that vanished without a FIN (a crashed host, a NAT that forgot the
connection) is played by a peer that completes the WebSocket handshake, then
reads everything and answers nothing, pongs included. On asyncio and trio.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from securemcp import ConnectionClosed
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving
from .reconnect_helpers import FAST, Relay, Stalls, make_app, url

pytestmark = pytest.mark.timeout(30)

LIMIT = 10  # seconds: every test ends well within this, or fails


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[int]]]:
    """A server that accepts the upgrade, then never says a word: ``(port, bytes read)``."""
    read: list[int] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        async with stream:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                if read:
                    read.append(len(data))
                    continue
                ws.receive_data(data)
                if any(isinstance(event, Request) for event in ws.events()):
                    await stream.send(ws.send(AcceptConnection()))
                    read.append(0)

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            yield port, read
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_silent_server_is_dropped_and_the_call_waiting_fails(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.client")
    async with silent_server() as (port, read):
        url = f"ws://127.0.0.1:{port}"
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(
                url, ping_interval=0.05, ping_timeout=0.1, timeout=None
            ) as client:
                # No timeout of its own: only the keepalive can end this call.
                with pytest.raises(ConnectionClosed):
                    await client.invoke_tool("echo", {"message": "anyone?"})
                assert client.closed
    assert sum(read) > 0  # the request and the pings reached the server
    assert "no pong from" in caplog.text


@pytest.mark.anyio
async def test_a_reconnecting_client_leaves_a_silent_server_for_a_live_one(
    anyio_backend: str,
) -> None:
    live = WebSocketTransport(make_app(Stalls()), shutdown_grace=0)
    async with (
        silent_server() as (silent_port, _),
        serving(live) as live_port,
        anyio.create_task_group() as tg,
    ):
        relay = Relay(tg, silent_port)
        await relay.start()
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(
                url(relay), ping_interval=0.05, ping_timeout=0.1, reconnect=FAST
            ) as client:
                relay.target = live_port  # where the next connection goes
                await client.wait_reconnected()
                assert await client.invoke_tool("echo", {"message": "x"}) == "x"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_live_server_answers_the_pings_and_the_connection_stays(anyio_backend: str) -> None:
    # The server sends no pings of its own: every ping on the wire is the client's.
    transport = WebSocketTransport(make_app(Stalls()), ping_interval=None, shutdown_grace=0)
    async with serving(transport) as port:
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(
                f"ws://127.0.0.1:{port}", ping_interval=0.02, ping_timeout=0.05
            ) as client:
                # Ten pings' worth, each pong due within 50 ms.
                await anyio.sleep(0.25)
                assert not client.closed
                assert await client.invoke_tool("echo", {"message": "x"}) == "x"


@pytest.mark.parametrize("option", ["ping_interval", "ping_timeout"])
def test_a_keepalive_that_makes_no_sense_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        WebSocketClient("ws://127.0.0.1:1", **{option: 0})  # type: ignore[arg-type]
