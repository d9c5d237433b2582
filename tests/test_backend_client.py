"""WebSocketClient's calls over real loopback sockets, on asyncio and trio.

The tests talk to :class:`~tests.mini_server.MiniServer`, a small server on
``anyio.create_tcp_listener`` and the sans-I/O :class:`ServerConnection`,
because the client must also cope with servers that misbehave: that drop the
connection mid-call, never answer, push notifications or answer out of order.
Round trips, typed errors, timeouts and the pending table, the connection's end,
and notifications. Opening the connection, TLS, and the real servers are in
``test_backend_client_connect.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
import pytest

from securemcp import (
    ConnectionClosed,
    InvalidParams,
    LocalProtocolError,
    MethodNotFound,
    RequestTimeout,
    SecureMCPError,
    ToolError,
    ToolNotFound,
)
from securemcp.backends.client import Notification, WebSocketClient

from .mini_server import LIMIT, MiniServer, running

# Round trips


@pytest.mark.anyio
async def test_round_trips_and_welcome() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            tools = await client.list_tools()
            echoed = await client.invoke_tool("echo", {"message": "hi"})
            total = await client.invoke_tool("add", {"a": 2, "b": 3})
            rtt = await client.ping()
            pong = await client.request("ping")
            assert client.pending_count == 0
            assert client.welcome is not None
            welcome = client.welcome
    names = {tool["name"] for tool in tools}
    assert {"echo", "add"} <= names
    echo_schema = next(t for t in tools if t["name"] == "echo")["inputSchema"]
    assert echo_schema["properties"]["message"]["type"] == "string"
    assert echoed == {"echoed": "hi"}
    assert total == 5
    assert 0 <= rtt < LIMIT
    assert pong == {"pong": True}
    assert welcome.message == "Connected to client-test"
    assert "echo" in welcome.tools
    assert client.closed
    assert client.close_code == 1000


@pytest.mark.anyio
async def test_headers_path_and_subprotocol_reach_the_server() -> None:
    with anyio.fail_after(LIMIT):
        async with (
            running() as (server, url),
            WebSocketClient(
                url + "/mcp?room=1",
                headers={"Authorization": "Bearer s3cret"},
                subprotocols=["mcp", "other"],
            ) as client,
        ):
            await client.ping()
    (request,) = server.requests
    assert request.path == "/mcp?room=1"
    assert request.header("authorization") == "Bearer s3cret"
    assert request.subprotocols == ("mcp", "other")
    assert client.subprotocol == "mcp"


@pytest.mark.anyio
async def test_fifty_concurrent_calls_get_their_own_answers() -> None:
    results: dict[int, Any] = {}

    async def call(client: WebSocketClient, value: int) -> None:
        results[value] = await client.invoke_tool("gather", {"value": value, "expect": 50})

    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            async with anyio.create_task_group() as tg:
                for value in range(50):
                    tg.start_soon(call, client, value)
            assert client.pending_count == 0
    # The server answered in reverse order; each caller still got its own value.
    assert results == {value: value for value in range(50)}


# Typed errors


@pytest.mark.anyio
async def test_error_answers_raise_typed_exceptions() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with pytest.raises(ToolNotFound) as not_found:
                await client.invoke_tool("nope")
            with pytest.raises(InvalidParams) as invalid:
                await client.invoke_tool("add", {"a": "x", "b": 1})
            with pytest.raises(ToolError) as failed:
                await client.invoke_tool("boom")
            with pytest.raises(MethodNotFound) as unknown:
                await client.request("no_such_method")
            # Not JSON: refused before anything is sent.
            with pytest.raises(ValueError, match="Unable to serialize"):
                await client.invoke_tool("echo", {"message": object()})
            # The connection survives error answers.
            assert await client.invoke_tool("add", {"a": 1, "b": 1}) == 2
    assert not_found.value.code == -32601
    assert not_found.value.message == "Tool not found: nope"
    assert invalid.value.code == -32602
    assert invalid.value.data[0]["loc"] == ["a"]
    assert failed.value.code == -32000
    assert "kaboom" in failed.value.message
    assert not isinstance(unknown.value, ToolNotFound)
    for exc in (not_found.value, invalid.value, failed.value, unknown.value):
        assert isinstance(exc, SecureMCPError)


# Timeouts and the pending table


@pytest.mark.anyio
async def test_timed_out_call_leaves_the_pending_table() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with pytest.raises(RequestTimeout):
                await client.invoke_tool("hang", timeout=0.2)
            assert client.pending_count == 0
            with pytest.raises(TimeoutError):  # RequestTimeout is a TimeoutError too
                await client.request("invoke_tool", {"tool_name": "hang"}, timeout=0.05)
            assert client.pending_count == 0
            assert await client.ping() >= 0


@pytest.mark.anyio
async def test_late_answer_to_a_forgotten_call_is_dropped() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url, timeout=0.2) as client:
            with pytest.raises(RequestTimeout):
                await client.invoke_tool("late")
            # The server now answers the forgotten call, then this one.
            assert await client.invoke_tool("release", timeout=None) == "released"
            assert client.pending_count == 0
            assert await client.invoke_tool("echo", {"message": "still fine"}) == {
                "echoed": "still fine"
            }


@pytest.mark.anyio
async def test_cancelled_call_leaves_the_pending_table() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with anyio.move_on_after(0.1) as scope:
                await client.invoke_tool("hang")
            assert scope.cancelled_caught
            assert client.pending_count == 0


# The connection ends


@pytest.mark.anyio
async def test_pending_calls_fail_at_once_when_the_server_drops() -> None:
    failures: list[BaseException] = []

    async def hang(client: WebSocketClient) -> None:
        try:
            await client.invoke_tool("hang")
        except ConnectionClosed as exc:
            failures.append(exc)

    # The default timeout is 30 s: only the drop can end these calls in time.
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(hang, client)
                with pytest.raises(ConnectionClosed) as dropped:
                    await client.invoke_tool("drop")
            assert client.pending_count == 0
            assert client.closed
            with pytest.raises(ConnectionClosed):
                await client.ping()
    assert len(failures) == 5
    assert dropped.value.close_code == 1006
    assert client.close_code == 1006


@pytest.mark.anyio
async def test_server_close_ends_calls_with_its_code() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.invoke_tool("bye")
            await client.wait_closed()
    assert closed.value.close_code == 1001
    assert closed.value.reason == "going away"
    assert (client.close_code, client.close_reason) == (1001, "going away")


@pytest.mark.anyio
async def test_calls_after_close_raise_connection_closed() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url):
            client = WebSocketClient(url)
            with pytest.raises(LocalProtocolError):
                await client.ping()
            await client.aclose()  # harmless before connect
            async with client:
                await client.ping()
            with pytest.raises(ConnectionClosed) as after:
                await client.ping()
            await client.aclose()  # and after close
            with pytest.raises(LocalProtocolError):
                await client.connect()
    assert after.value.close_code == 1000


@pytest.mark.anyio
async def test_close_without_the_servers_answer_is_bounded_by_close_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(handshake="deaf")) as (_, url):
            async with WebSocketClient(url, close_timeout=0.2) as client:
                started = anyio.current_time()
            elapsed = anyio.current_time() - started
    assert 0.2 <= elapsed < 3  # the default close_timeout (5 s) was not used
    assert client.close_code == 1006  # the close handshake never completed


@pytest.mark.anyio
async def test_body_exception_and_cancellation_pass_through_unwrapped() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url):
            # On trio a task group spanning the body would wrap this in an
            # ExceptionGroup; pytest.raises(KeyError) would then fail.
            with pytest.raises(KeyError):
                async with WebSocketClient(url) as client:
                    raise KeyError("mine")
            assert client.close_code == 1000
            with anyio.move_on_after(0.2) as scope:
                async with WebSocketClient(url) as client:
                    await client.invoke_tool("hang", timeout=None)
            assert scope.cancelled_caught
            assert client.close_code == 1000


# Notifications


@pytest.mark.anyio
async def test_notifications_reach_the_handler() -> None:
    seen: list[tuple[str, Any]] = []
    got_all = anyio.Event()

    async def on_note(method: str, params: Any) -> None:
        seen.append((method, params))
        if len(seen) == 3:
            got_all.set()

    with anyio.fail_after(LIMIT):
        async with (
            running() as (_, url),
            WebSocketClient(url, on_notification=on_note) as client,
        ):
            assert await client.invoke_tool("shout", {"count": 3}) == 3
            await got_all.wait()
            with pytest.raises(LocalProtocolError):
                client.notifications()
    assert seen == [("chat/message", {"n": n}) for n in range(3)]


@pytest.mark.anyio
async def test_failing_handler_is_logged_and_the_connection_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Any] = []
    both = anyio.Event()

    def on_note(method: str, params: Any) -> None:
        calls.append(params)
        if len(calls) == 2:
            both.set()
        if params["n"] == 0:
            raise ValueError("handler bug")

    with anyio.fail_after(LIMIT), caplog.at_level(logging.ERROR, "securemcp.client"):
        async with running() as (_, url), WebSocketClient(url, on_notification=on_note) as client:
            await client.invoke_tool("shout", {"count": 2})
            await both.wait()  # the first failure did not stop the second delivery
            assert await client.ping() >= 0
    assert calls == [{"n": 0}, {"n": 1}]
    assert caplog.text.count("on_notification handler failed") == 1


@pytest.mark.anyio
async def test_notifications_iterator_and_its_end() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            await client.invoke_tool("shout", {"count": 2})
            notes = client.notifications()
            first = await notes.__anext__()
            with pytest.raises(ConnectionClosed):
                await client.invoke_tool("drop")
            # The rest of the buffer, then the end: the connection is over.
            rest = [note async for note in notes]
    assert first == Notification("chat/message", {"n": 0})
    assert first.method == "chat/message"
    assert rest == [("chat/message", {"n": 1})]


@pytest.mark.anyio
async def test_lagging_consumer_loses_the_oldest_notifications() -> None:
    with anyio.fail_after(LIMIT):
        async with (
            running() as (_, url),
            WebSocketClient(url, max_queued_notifications=2) as client,
        ):
            await client.invoke_tool("shout", {"count": 5})
            assert client.dropped_notifications == 3
            notes = client.notifications()
            kept = [await notes.__anext__(), await notes.__anext__()]
    assert [params["n"] for _, params in kept] == [3, 4]
