"""Tools called over Streamable HTTP reach the broadcast: they publish, they cannot subscribe."""

from __future__ import annotations

import anyio
import pytest

from securemcp import Context, SecureMCP
from securemcp.transport import HTTPClient, WebSocketClient, WebSocketTransport

from .helpers import serving

LIMIT = 10.0


def broadcast_app() -> SecureMCP:
    app = SecureMCP("http-broadcast")

    @app.tool()
    async def join(topic: str, ctx: Context) -> int:
        ctx.subscribe(topic)
        return ctx.subscriber_count(topic)

    @app.tool()
    async def say(topic: str, text: str, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"text": text})

    @app.tool()
    def say_sync(topic: str, text: str, ctx: Context) -> int:
        # A worker thread: the publication hops to the event loop.
        return ctx.publish(topic, "said", {"text": text})

    @app.tool()
    async def members(topic: str, ctx: Context) -> dict[str, object]:
        return {"count": ctx.subscriber_count(topic), "topics": ctx.topics()}

    return app


@pytest.mark.anyio
async def test_an_http_call_publishes_to_websocket_subscribers_and_cannot_subscribe() -> None:
    transport = WebSocketTransport(broadcast_app(), shutdown_grace=0.5, close_timeout=1.0)
    async with serving(transport) as port:
        with anyio.fail_after(LIMIT):
            async with (
                WebSocketClient(f"ws://127.0.0.1:{port}") as listener,
                HTTPClient(f"http://127.0.0.1:{port}/mcp") as caller,
            ):
                assert await listener.invoke_tool("join", {"topic": "room"}) == 1
                assert await caller.invoke_tool("say", {"topic": "room", "text": "async"}) == 1
                assert await caller.invoke_tool("say_sync", {"topic": "room", "text": "sync"}) == 1
                heard = []
                async for method, params in listener.notifications():
                    heard.append((method, params["text"]))
                    if len(heard) == 2:
                        break
                assert heard == [("said", "async"), ("said", "sync")]
                assert await caller.invoke_tool("members", {"topic": "room"}) == {
                    "count": 1,
                    "topics": ["room"],
                }
                refused = await caller.call_tool("join", {"topic": "room"})
                assert refused.is_error
                assert "persistent connection" in refused.text
