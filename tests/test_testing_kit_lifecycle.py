"""``securemcp.testing.TestClient`` over a connection's life: what happens during and around calls.

Broadcasts and notifications, progress before the result, calls cancelled when
the caller gives up or disconnects; the client's own limits; the app's
resources opened with the first client and closed with it (also when opening
fails, or clients connect at once); misuse refused up front.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from securemcp import ConnectionClosed, HandshakeRejected, LocalProtocolError, SecureMCP
from securemcp.backends.mcp_client import ProgressUpdate
from securemcp.protocol import Limits
from securemcp.testing import TestClient

from .testing_kit_helpers import (
    ANN,
    WAIT,
    anyio_backend,  # noqa: F401 - the fixture: both loops
    guarded_transport,
    kit_app,
)

# Notifications, progress, cancellation


@pytest.mark.anyio
async def test_clients_of_one_app_hear_each_others_broadcasts() -> None:
    app = kit_app()
    async with TestClient(app, principal=ANN) as ann, TestClient(app) as bob:
        assert await ann.invoke_tool("join", {"room": "lobby"}) == 1
        assert await bob.invoke_tool("join", {"room": "lobby"}) == 2
        assert await bob.invoke_tool("say", {"room": "lobby", "text": "hi"}) == 2
        expected = ("room.said", {"room": "lobby", "text": "hi"})
        with anyio.fail_after(WAIT):
            assert tuple(await anext(aiter(ann.notifications()))) == expected
            assert tuple(await anext(aiter(bob.notifications()))) == expected
        # Another app is another server.
        async with TestClient(kit_app()) as stranger:
            assert await stranger.invoke_tool("say", {"room": "lobby", "text": "?"}) == 0


@pytest.mark.anyio
async def test_on_notification_receives_the_broadcast() -> None:
    app = kit_app()
    heard: list[tuple[str, Any]] = []
    got = anyio.Event()

    def on_note(method: str, params: Any) -> None:
        heard.append((method, params))
        got.set()

    async with TestClient(app, on_notification=on_note) as client:
        await client.invoke_tool("join", {"room": "r"})
        await client.invoke_tool("say", {"room": "r", "text": "me"})
        with anyio.fail_after(WAIT):
            await got.wait()
    assert heard == [("room.said", {"room": "r", "text": "me"})]


@pytest.mark.anyio
@pytest.mark.parametrize("tool", ["count", "count_in_a_thread"])
async def test_progress_reaches_the_caller_before_the_result(tool: str) -> None:
    updates: list[ProgressUpdate] = []
    async with TestClient(kit_app(), mcp=True) as client:
        result = await client.call_tool(tool, {"steps": 3}, on_progress=updates.append)
    assert result.value() == 3
    assert [(u.progress, u.total) for u in updates] == [(1, 3), (2, 3), (3, 3)]


def forever_app() -> tuple[SecureMCP, anyio.Event, anyio.Event]:
    """The kit app with a tool that runs until cancelled: (app, started, cancelled)."""
    app = kit_app()
    started, cancelled = anyio.Event(), anyio.Event()

    @app.tool()
    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    return app, started, cancelled


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_an_mcp_call_the_caller_gives_up_is_cancelled_on_the_server(how: str) -> None:
    app, started, cancelled = forever_app()
    async with TestClient(app, mcp=True) as client:
        if how == "timeout":
            with pytest.raises(TimeoutError):
                await client.call_tool("forever", timeout=0.05)
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "forever")
                with anyio.fail_after(WAIT):
                    await started.wait()
                tg.cancel_scope.cancel()
        # notifications/cancelled reached the server, which cancelled the tool.
        with anyio.fail_after(WAIT):
            await cancelled.wait()
        assert client.pending_count == 0
        assert await client.invoke_tool("echo", {"text": "still here"}) == "still here"


@pytest.mark.anyio
async def test_disconnecting_cancels_the_calls_still_running() -> None:
    app, started, cancelled = forever_app()
    async with TestClient(app) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.invoke_tool, "forever")
            with anyio.fail_after(WAIT):
                await started.wait()
            tg.cancel_scope.cancel()
        # The seed dialect has no way to tell the server: the tool runs on.
        assert await client.invoke_tool("echo", {"text": "x"}) == "x"
        assert not cancelled.is_set()
    with anyio.fail_after(WAIT):
        await cancelled.wait()


# The client's own options and misuse


@pytest.mark.anyio
async def test_client_limits_refuse_a_large_answer() -> None:
    async with TestClient(kit_app(), limits=Limits(max_message_size=1000)) as client:
        assert await client.invoke_tool("echo", {"text": "short"}) == "short"
        with pytest.raises(ConnectionClosed):
            await client.invoke_tool("echo", {"text": "y" * 2000})
    assert client.close_code == 1009


@pytest.mark.anyio
async def test_resources_open_with_the_first_client_and_close_with_it() -> None:
    app = kit_app()
    log: list[str] = []

    class Resource:
        async def __aenter__(self) -> None:
            log.append("open")

        async def __aexit__(self, *exc: object) -> None:
            log.append("close")

    app.uses(Resource())
    async with TestClient(app) as first:
        async with TestClient(app) as second:
            assert await second.invoke_tool("add", {"a": 1}) == 1
        assert log == ["open"]
        assert await first.invoke_tool("add", {"a": 2}) == 2
    assert log == ["open", "close"]
    async with TestClient(app):
        assert log == ["open", "close", "open"]
    assert log == ["open", "close", "open", "close"]


class FlakyResource:
    """An app resource whose first opening fails (once ``gate`` is set, if given)."""

    def __init__(self, gate: anyio.Event | None = None) -> None:
        self.gate = gate
        self.log: list[str] = []

    async def __aenter__(self) -> None:
        self.log.append("open")
        if len(self.log) == 1:
            if self.gate is not None:
                await self.gate.wait()
            raise RuntimeError("database down")

    async def __aexit__(self, *exc: object) -> None:
        self.log.append("close")


@pytest.mark.anyio
async def test_a_resource_that_fails_to_open_fails_the_connect_and_nothing_else() -> None:
    app = kit_app()
    attempts = app.uses(FlakyResource()).log
    client = TestClient(app)
    with pytest.raises(RuntimeError, match="database down"):
        await client.connect()
    assert not client.serving
    async with TestClient(app) as second:
        assert await second.invoke_tool("add", {"a": 1}) == 1
    assert attempts == ["open", "open", "close"]


@pytest.mark.anyio
async def test_a_client_waiting_on_a_failed_opening_opens_the_resources_itself() -> None:
    app = kit_app()
    release = anyio.Event()
    attempts = app.uses(FlakyResource(release)).log
    failed: list[BaseException] = []
    done = anyio.Event()

    async def first() -> None:
        with pytest.raises(RuntimeError) as caught:
            await TestClient(app).connect()
        failed.append(caught.value)

    async def second() -> None:
        async with TestClient(app) as client:
            async with TestClient(app) as third:  # shares what the second opened
                assert await third.invoke_tool("add", {"a": 3}) == 3
            assert await client.invoke_tool("add", {"a": 2}) == 2
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        release.set()
        with anyio.fail_after(WAIT):
            await done.wait()
    assert [str(error) for error in failed] == ["database down"]
    assert attempts == ["open", "open", "close"]


@pytest.mark.anyio
async def test_clients_connecting_at_once_wait_for_the_resources() -> None:
    app = kit_app()
    log: list[str] = []
    opened = anyio.Event()

    class Slow:
        async def __aenter__(self) -> None:
            log.append("opening")
            await opened.wait()
            log.append("open")

        async def __aexit__(self, *exc: object) -> None:
            log.append("close")

    @app.tool()
    async def resource_state() -> str:
        return log[-1]

    app.uses(Slow())
    seen: list[str] = []
    all_seen = anyio.Event()

    async def one_client(started: anyio.Event) -> None:
        started.set()
        async with TestClient(app) as client:
            seen.append(await client.invoke_tool("resource_state"))
            if len(seen) == 3:
                all_seen.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            started = anyio.Event()
            tg.start_soon(one_client, started)
            await started.wait()
        await anyio.wait_all_tasks_blocked()
        assert log == ["opening"]
        opened.set()
        with anyio.fail_after(WAIT):
            await all_seen.wait()
        tg.cancel_scope.cancel()
    assert seen == ["open"] * 3
    assert log == ["opening", "open", "close"]


def test_misuse_is_refused_up_front() -> None:
    with pytest.raises(TypeError, match="SecureMCP app or a WebSocketTransport"):
        TestClient("ws://localhost:8765")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        TestClient(kit_app(), principal=ANN, token="good")
    with pytest.raises(TypeError, match="Principal"):
        TestClient(kit_app(), principal="ann")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_connect_twice_is_refused_and_a_failed_connect_leaves_nothing() -> None:
    app = kit_app()
    client = TestClient(app)
    async with client:
        with pytest.raises(LocalProtocolError, match="already"):
            await client.connect()
    assert not client.serving
    await client.aclose()  # again: harmless
    refused = TestClient(guarded_transport(), token="forged")
    with pytest.raises(HandshakeRejected):
        await refused.connect()
    assert not refused.serving
    assert refused.closed


@pytest.mark.anyio
async def test_a_cancelled_body_still_closes_the_client_and_its_server() -> None:
    app = kit_app()
    with anyio.move_on_after(0.05):
        async with TestClient(app) as client:
            await anyio.sleep_forever()
    assert client.closed
    assert not client.serving
    async with TestClient(app) as after:
        assert await after.invoke_tool("add", {"a": 4}) == 4
