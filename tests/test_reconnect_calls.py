"""WebSocketClient(reconnect=...): the calls around a drop, on asyncio and trio.

In flight at the drop: ``ConnectionClosed`` at once, never sent again, unless
the caller opted in and the server's tool list says the tool is idempotent.
Made while the client reconnects: they wait for the new connection within
their own timeout. The server sits behind a relay that the tests cut
(``tests/reconnect_helpers.py``); its stalling tools count their runs, so a
test sees whether the server ran a call once or twice.
"""

from __future__ import annotations

import anyio
import pytest

from securemcp import ConnectionClosed, RequestTimeout
from securemcp.transport import WebSocketClient

from .reconnect_helpers import (
    FAST,
    Stalls,
    cut_and_see,
    cut_while_running,
    make_app,
    relayed_server,
    url,
)

LIMIT = 10  # seconds: every test ends well within this, or fails

pytestmark = pytest.mark.timeout(30)


@pytest.mark.anyio
async def test_a_call_in_flight_fails_at_once_and_is_not_sent_again(anyio_backend: str) -> None:
    stalls = Stalls()
    async with relayed_server(make_app(stalls)) as (_, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=FAST, retry_idempotent=True) as client:
                # It fails while the server is still away: nothing waits for a reconnection.
                outcome = await cut_while_running(
                    relay,
                    stalls,
                    lambda: client.invoke_tool("append", {"item": "x"}, timeout=None),
                    fails=True,
                )
                assert isinstance(outcome, ConnectionClosed)
                assert outcome.close_code == 1006
                await client.wait_reconnected()
                assert await client.invoke_tool("echo", {"message": "x"}) == "x"
    assert stalls.runs["append"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("tool", "mcp"), [("store", False), ("look", True)])
async def test_an_idempotent_tool_is_sent_again_when_the_caller_opted_in(
    anyio_backend: str, tool: str, mcp: bool
) -> None:
    """``store`` is annotated idempotentHint, ``look`` readOnlyHint; over both dialects."""
    stalls = Stalls()
    async with relayed_server(make_app(stalls)) as (_, relay):
        with anyio.fail_after(LIMIT):
            client = WebSocketClient(url(relay), reconnect=FAST, retry_idempotent=True, mcp=mcp)
            async with client:
                outcome = await cut_while_running(
                    relay, stalls, lambda: client.invoke_tool(tool, {"key": "k"}), fails=False
                )
                assert outcome == f"{'stored' if tool == 'store' else 'looked'} k"
    assert stalls.runs[tool] == 2


@pytest.mark.anyio
async def test_without_opting_in_an_idempotent_tool_is_not_sent_again(anyio_backend: str) -> None:
    stalls = Stalls()
    async with relayed_server(make_app(stalls)) as (_, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=FAST, mcp=True) as client:
                outcome = await cut_while_running(
                    relay, stalls, lambda: client.call_tool("store", {"key": "k"}), fails=True
                )
                assert isinstance(outcome, ConnectionClosed)
                await client.wait_reconnected()
    assert stalls.runs["store"] == 1


@pytest.mark.anyio
async def test_calls_made_while_reconnecting_wait_within_their_timeout(anyio_backend: str) -> None:
    stalls = Stalls()
    async with relayed_server(make_app(stalls)) as (_, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=FAST) as client:
                await cut_and_see(client, relay, stalls)
                with pytest.raises(RequestTimeout):
                    await client.invoke_tool("echo", {"message": "soon"}, timeout=0.05)
                answers: list[str] = []

                async def call() -> None:
                    answers.append(await client.invoke_tool("echo", {"message": "later"}))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    tg.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    assert answers == []
                    await relay.start()
                assert answers == ["later", "later"]
                assert client.reconnects == 1


@pytest.mark.anyio
async def test_a_failing_hook_is_logged_and_the_connection_kept(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(client: WebSocketClient) -> None:
        raise RuntimeError("cannot rejoin")

    async with relayed_server(make_app(Stalls())) as (_, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=FAST, on_reconnect=hook) as client:
                await relay.stop()
                await relay.start()
                await client.wait_reconnected()
                assert await client.invoke_tool("echo", {"message": "still"}) == "still"
    assert "on_reconnect hook failed" in caplog.text
    assert "cannot rejoin" in caplog.text
