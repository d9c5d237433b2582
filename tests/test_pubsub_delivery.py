"""Broadcast over real sockets: clients that join, leave and publish, and one that stops reading.

Several clients of one transport hear what their topics publish (both
dialects, compressed or not); a client that does not read is dropped with
1013 while the others keep up, and the server never holds its backlog.
"""

from __future__ import annotations

import gc
import tracemalloc
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from securemcp import Context, SecureMCP
from securemcp.protocol import Limits
from securemcp.testing import TestClient
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving
from .pubsub_helpers import WAIT, SlowReader, flood

# Over real sockets


def broadcast_app() -> SecureMCP:
    """Tools that join, leave and publish through their Context (async and sync)."""
    app = SecureMCP("pubsub")

    @app.tool()
    async def join(topic: str, ctx: Context) -> int:
        ctx.subscribe(topic)
        return ctx.subscriber_count(topic)

    @app.tool()
    def join_sync(topic: str, ctx: Context) -> list[str]:
        # A worker thread: every call hops to the event loop.
        ctx.subscribe(topic)
        return sorted(ctx.subscriptions)

    @app.tool()
    async def leave(topic: str, ctx: Context) -> bool:
        return ctx.unsubscribe(topic)

    @app.tool()
    async def say(topic: str, text: str, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"topic": topic, "text": text})

    @app.tool()
    def say_sync(topic: str, text: str, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"topic": topic, "text": text})

    @app.tool()
    async def say_big(topic: str, size: int, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"topic": topic, "text": "x" * size})

    @app.tool()
    def topics(ctx: Context) -> list[str]:
        return ctx.topics()

    return app


async def next_note(client: WebSocketClient) -> tuple[str, Any]:
    with anyio.fail_after(WAIT):
        async for method, params in client.notifications():
            return method, params
    raise AssertionError("the connection ended before a notification came")


@pytest.mark.anyio
async def test_three_clients_receive_what_their_room_publishes() -> None:
    transport = WebSocketTransport(broadcast_app())
    async with (
        TestClient(transport) as ann,
        TestClient(transport) as bob,
        TestClient(transport) as cyd,
    ):
        assert await ann.invoke_tool("join", {"topic": "room:a"}) == 1
        assert await bob.invoke_tool("join_sync", {"topic": "room:a"}) == ["room:a"]
        assert await cyd.invoke_tool("join", {"topic": "room:b"}) == 1
        assert sorted(await cyd.invoke_tool("topics")) == ["room:a", "room:b"]

        # The sender (a member) hears itself too; cyd, elsewhere, hears nothing.
        assert await ann.invoke_tool("say", {"topic": "room:a", "text": "one"}) == 2
        assert await cyd.invoke_tool("say_sync", {"topic": "room:a", "text": "two"}) == 2
        for member in (ann, bob):
            assert await next_note(member) == ("said", {"topic": "room:a", "text": "one"})
            assert await next_note(member) == ("said", {"topic": "room:a", "text": "two"})
        assert await bob.invoke_tool("say", {"topic": "room:b", "text": "three"}) == 1
        assert await next_note(cyd) == ("said", {"topic": "room:b", "text": "three"})

        assert await bob.invoke_tool("leave", {"topic": "room:a"}) is True
        assert await bob.invoke_tool("leave", {"topic": "room:a"}) is False
        assert await cyd.invoke_tool("say", {"topic": "room:a", "text": "four"}) == 1
        assert await next_note(ann) == ("said", {"topic": "room:a", "text": "four"})
    # Each connection left every topic as it ended.
    assert transport.broker.topics() == []


@pytest.mark.anyio
async def test_an_mcp_client_gets_jsonrpc_notifications() -> None:
    app = broadcast_app()
    async with TestClient(app, mcp=True) as mcp, TestClient(app) as seed:
        await mcp.invoke_tool("join", {"topic": "t"})
        await seed.invoke_tool("join", {"topic": "t"})
        assert await seed.invoke_tool("say", {"topic": "t", "text": "x"}) == 2
        assert await next_note(mcp) == ("said", {"topic": "t", "text": "x"})
        assert await next_note(seed) == ("said", {"topic": "t", "text": "x"})


@pytest.mark.anyio
async def test_a_compressed_connection_encodes_its_own_frames() -> None:
    limits = Limits(permessage_deflate=True)
    transport = WebSocketTransport(
        broadcast_app(), limits=limits, shutdown_grace=1, close_timeout=2
    )
    async with serving(transport) as port:
        url = f"ws://127.0.0.1:{port}"
        async with WebSocketClient(url, limits=limits) as client:
            await client.invoke_tool("join", {"topic": "t"})
            assert await client.invoke_tool("say", {"topic": "t", "text": "z" * 500}) == 1
            assert await next_note(client) == ("said", {"topic": "t", "text": "z" * 500})


@pytest.mark.anyio
async def test_a_client_that_does_not_read_is_dropped_with_1013_and_the_others_keep_up() -> None:
    limits = Limits(max_pending_output=256 * 1024)
    transport = WebSocketTransport(
        broadcast_app(), limits=limits, shutdown_grace=1, close_timeout=WAIT
    )
    size = 64 * 1024
    # 12.5 MiB for each subscriber: far past the 256 KiB bound and the socket
    # buffers (Linux lets a send buffer grow to 4 MiB).
    rounds = 200
    async with serving(transport) as port, AsyncExitStack() as stack:
        slow = await anyio.to_thread.run_sync(SlowReader, port)
        stack.callback(slow.sock.close)
        assert await anyio.to_thread.run_sync(lambda: slow.call("join", topic="t")) == 1
        url = f"ws://127.0.0.1:{port}"
        async with WebSocketClient(url, max_queued_notifications=rounds + 10) as fast:
            await fast.invoke_tool("join", {"topic": "t"})
            gc.collect()
            tracemalloc.start()
            try:
                with anyio.fail_after(WAIT * 3):
                    received = await flood(fast, fast, rounds, size)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            # The fast client got everything, while the slow one was cut off.
            assert received == rounds
            assert transport.broker.subscriber_count("t") == 1
        # The server never held the slow one's share (~8 MiB past the socket buffers).
        assert peak < 3_000_000, peak
        await anyio.to_thread.run_sync(slow.read_to_the_end)
        assert slow.close_code == 1013
        assert len(slow.messages) < rounds
