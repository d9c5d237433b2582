"""WebSocketClient(reconnect=...): drops, backoff, the hook, giving up; on asyncio and trio.

The server is a real :class:`WebSocketTransport` on loopback, behind a TCP relay
(``tests/reconnect_helpers.py``): cutting the relay drops every connection with
no close frame, as a killed server does, while the test still sees which tools
ran; stopping the server itself is a graceful restart (close code 1001). Both
come back on the same port. Delays are a few milliseconds, and the tests wait
for events (``wait_reconnected``), never for time to pass.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import anyio
import pytest

from securemcp import ConnectionClosed, HandshakeRejected, LocalProtocolError
from securemcp.auth import StaticTokenAuthenticator
from securemcp.security import SecurityPolicy
from securemcp.transport import Backoff, WebSocketClient, WebSocketTransport

from .reconnect_helpers import (
    FAST,
    Stalls,
    client_log,
    cut_and_see,
    make_app,
    relayed_server,
    settle,
    url,
)

LIMIT = 10  # seconds: every test ends well within this, or fails

pytestmark = pytest.mark.timeout(30)


# The schedule, without waiting for it


def test_the_default_backoff_is_bounded_with_equal_jitter() -> None:
    backoff = Backoff(random=random.Random(7).random)
    ceilings = [backoff.ceiling(n) for n in range(8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    for attempt, ceiling in enumerate(ceilings):
        delays = [backoff.delay(attempt) for _ in range(200)]
        # Half fixed, half random: never less than half the ceiling, never more.
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert max(delays) - min(delays) > ceiling / 4, "the random half varies"
    assert backoff.max_attempts is None
    assert backoff.give_up_after is None


def test_the_jitter_is_the_random_fraction_of_each_delay() -> None:
    low = Backoff(initial=1.0, maximum=10.0, factor=3.0, jitter=0.2, random=lambda: 0.0)
    high = Backoff(initial=1.0, maximum=10.0, factor=3.0, jitter=0.2, random=lambda: 1.0)
    assert [low.delay(n) for n in range(4)] == pytest.approx([0.8, 2.4, 7.2, 8.0])
    assert [high.delay(n) for n in range(4)] == pytest.approx([1.0, 3.0, 9.0, 10.0])
    # Hours into an outage the ceiling is still the maximum, and no float overflows.
    assert low.ceiling(100_000) == 10.0
    assert Backoff(initial=2.0, maximum=2.0, factor=1.0).ceiling(5) == 2.0


def test_giving_up_after_attempts_or_time() -> None:
    backoff = Backoff(max_attempts=3, give_up_after=60.0)
    assert not backoff.gives_up(2, 10.0)
    assert backoff.gives_up(3, 10.0)
    assert backoff.gives_up(0, 60.0)
    assert not Backoff().gives_up(10_000, 86_400.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"initial": 0}, "initial must be > 0"),
        ({"initial": 2.0, "maximum": 1.0}, "maximum must be >= initial"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"give_up_after": -1.0}, "give_up_after must be > 0"),
    ],
)
def test_a_backoff_that_makes_no_sense_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**options)


def test_reconnect_options_need_reconnect() -> None:
    with pytest.raises(ValueError, match="need reconnect"):
        WebSocketClient("ws://127.0.0.1:1", on_reconnect=print)
    with pytest.raises(ValueError, match="need reconnect"):
        WebSocketClient("ws://127.0.0.1:1", retry_idempotent=True)
    with pytest.raises(TypeError, match="a bool or a Backoff"):
        WebSocketClient("ws://127.0.0.1:1", reconnect=3)  # type: ignore[arg-type]


# Drops


@pytest.mark.anyio
async def test_a_killed_server_is_reconnected_the_hook_rejoins_and_notifications_go_on(
    anyio_backend: str,
) -> None:
    stalls = Stalls()
    joined: list[int] = []

    async def rejoin(client: WebSocketClient) -> None:
        joined.append(client.reconnects)
        await client.invoke_tool("join", {"topic": "room"})

    async with relayed_server(make_app(stalls)) as (_, relay):
        with anyio.fail_after(LIMIT):
            client = WebSocketClient(url(relay), reconnect=FAST, on_reconnect=rejoin)
            async with client:
                await client.invoke_tool("join", {"topic": "room"})
                notes = client.notifications()
                await client.invoke_tool("say", {"topic": "room", "text": "before"})
                assert await anext(notes) == ("said", {"text": "before"})
                for round_ in (1, 2):
                    await relay.stop()
                    await relay.start()
                    await client.wait_reconnected(round_)
                    # Rejoined by the hook before this call could go: the message reaches us.
                    await client.invoke_tool("say", {"topic": "room", "text": f"after {round_}"})
                    # The same iterator, across connections.
                    assert await anext(notes) == ("said", {"text": f"after {round_}"})
                assert joined == [1, 2]
                assert client.reconnects == 2
                assert not client.closed
            assert client.closed
            # Closed for good: the iterator ends.
            with pytest.raises(StopAsyncIteration):
                await anext(notes)


@pytest.mark.anyio
async def test_a_graceful_restart_reconnects_and_negotiates_mcp_again(anyio_backend: str) -> None:
    seen: list[Any] = []

    def hook(client: WebSocketClient) -> None:
        seen.append(client.server_info)

    async with relayed_server(make_app(Stalls())) as (server, relay):
        with anyio.fail_after(LIMIT):
            client = WebSocketClient(url(relay), reconnect=FAST, on_reconnect=hook, mcp=True)
            async with client:
                first = client.server_info
                assert first is not None
                await server.stop()  # the server closes with 1001 and comes back
                await server.start()
                await client.wait_reconnected(1)
                # The hook ran after the new negotiation.
                assert seen[0] is not None
                assert seen[0] is not first
                assert seen[0] is client.server_info
                result = await client.call_tool("echo", {"message": "hi"})
                assert result.value() == "hi"


@pytest.mark.anyio
async def test_notifications_reach_on_notification_across_reconnections(anyio_backend: str) -> None:
    received: list[Any] = []
    arrived = anyio.Event()

    def note(method: str, params: Any) -> None:
        received.append(params["text"])
        if params["text"] == "after":
            arrived.set()

    async def rejoin(client: WebSocketClient) -> None:
        await client.invoke_tool("join", {"topic": "room"})

    async with relayed_server(make_app(Stalls())) as (_, relay):
        with anyio.fail_after(LIMIT):
            client = WebSocketClient(
                url(relay), reconnect=FAST, on_reconnect=rejoin, on_notification=note
            )
            async with client:
                await client.invoke_tool("join", {"topic": "room"})
                await client.invoke_tool("say", {"topic": "room", "text": "before"})
                await relay.stop()
                await relay.start()
                await client.wait_reconnected()
                await client.invoke_tool("say", {"topic": "room", "text": "after"})
                await arrived.wait()
    assert received == ["before", "after"]


# Giving up


@pytest.mark.anyio
@pytest.mark.parametrize("limit", [{"max_attempts": 3}, {"give_up_after": 0.1}])
async def test_past_its_limit_the_client_closes_and_waiting_calls_fail(
    anyio_backend: str, limit: dict[str, Any]
) -> None:
    backoff = Backoff(initial=0.01, maximum=0.02, **limit)
    stalls = Stalls()
    async with relayed_server(make_app(stalls)) as (_, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=backoff) as client:
                await cut_and_see(client, relay, stalls)
                with pytest.raises(ConnectionClosed, match="gave up reconnecting") as caught:
                    await client.invoke_tool("echo", {"message": "x"}, timeout=None)
                assert isinstance(caught.value.__cause__, ConnectionRefusedError)
                await client.wait_closed()
                assert client.closed
                assert isinstance(client.reconnect_error, ConnectionRefusedError)
                assert client.reconnects == 0
                with pytest.raises(ConnectionClosed):
                    await client.wait_reconnected()


@pytest.mark.anyio
async def test_a_refusal_waiting_cannot_cure_stops_reconnecting_at_once(anyio_backend: str) -> None:
    stalls = Stalls()
    app = make_app(stalls)
    # Forever, unless the 401 stops it.
    backoff = Backoff(initial=0.01, maximum=0.02)
    async with relayed_server(app) as (server, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=backoff) as client:
                await cut_and_see(client, relay, stalls)
                await server.stop()
                # Back with a policy this client's (absent) credentials do not pass.
                policy = SecurityPolicy(
                    authenticator=StaticTokenAuthenticator({"s3cret": {"admin"}})
                )
                locked = WebSocketTransport(app, security=policy, shutdown_grace=0)
                await server.start(
                    lambda port, task_status: locked.serve(
                        "127.0.0.1", port, task_status=task_status
                    )
                )
                await relay.start()
                with pytest.raises(ConnectionClosed, match="HTTP 401") as caught:
                    await client.invoke_tool("echo", {"message": "x"}, timeout=None)
                rejected = caught.value.__cause__
                assert isinstance(rejected, HandshakeRejected)
                assert rejected.status_code == 401
                assert client.reconnect_error is rejected
                assert client.closed


class Refusals(logging.Handler):
    """Sets :attr:`seen` when the client logs a failed attempt naming ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = f"HTTP {status}"
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.status in record.getMessage():
            self.seen.set()


@pytest.mark.anyio
async def test_a_full_server_is_waited_for(anyio_backend: str) -> None:
    """503 (over the connection limit) heals: the client keeps trying until there is room."""
    stalls = Stalls()
    app = make_app(stalls)
    refusals = Refusals(503)
    with client_log(refusals):
        async with relayed_server(app) as (server, relay):
            with anyio.fail_after(LIMIT):
                async with WebSocketClient(url(relay), reconnect=FAST) as client:
                    await cut_and_see(client, relay, stalls)
                    await server.stop()
                    full = WebSocketTransport(app, max_connections=1, shutdown_grace=0)
                    await server.start(
                        lambda port, task_status: full.serve(
                            "127.0.0.1", port, task_status=task_status
                        )
                    )
                    # The one place taken before the relay lets the client back in.
                    async with WebSocketClient(url(server)) as occupant:
                        await relay.start()
                        await refusals.seen.wait()
                        assert not client.closed
                        assert await occupant.invoke_tool("echo", {"message": "mine"}) == "mine"
                    await client.wait_reconnected()
                    assert await client.invoke_tool("echo", {"message": "x"}) == "x"


@pytest.mark.anyio
async def test_aclose_while_reconnecting_ends_the_waiting_calls(anyio_backend: str) -> None:
    stalls = Stalls()
    async with relayed_server(make_app(stalls)) as (_, relay):
        with anyio.fail_after(LIMIT):
            client = WebSocketClient(url(relay), reconnect=FAST)
            outcome: list[Any] = []
            async with anyio.create_task_group() as tg, client:
                await cut_and_see(client, relay, stalls)
                tg.start_soon(
                    settle,
                    lambda: client.invoke_tool("echo", {"message": "x"}, timeout=None),
                    outcome,
                )
                await anyio.wait_all_tasks_blocked()
                await client.aclose()
            assert len(outcome) == 1
            assert isinstance(outcome[0], ConnectionClosed)
            assert client.closed
            assert client.reconnects == 0


@pytest.mark.anyio
async def test_the_first_connect_is_not_retried(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with relayed_server(make_app(Stalls())) as (_, relay):
        await relay.stop()
        with anyio.fail_after(LIMIT):
            client = WebSocketClient(url(relay), reconnect=FAST)
            with pytest.raises(LocalProtocolError, match="not connected"):
                await client.invoke_tool("echo", {"message": "x"})
            with pytest.raises(ConnectionRefusedError):
                await client.connect()
            assert client.closed
            await client.wait_closed()
            await client.aclose()
    assert "reconnect" not in caplog.text


@pytest.mark.anyio
async def test_reconnecting_is_logged(anyio_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    """A drop says so at WARNING, the way back at INFO (on the ``securemcp.client`` logger)."""
    caplog.set_level(logging.INFO, "securemcp.client")
    async with relayed_server(make_app(Stalls())) as (_, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=FAST) as client:
                await relay.stop()
                await relay.start()
                await client.wait_reconnected()
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert any(level == "WARNING" and "lost (code 1006" in text for level, text in messages)
    assert any(level == "INFO" and "reconnected to" in text for level, text in messages)


@pytest.mark.anyio
async def test_a_server_that_closes_normally_is_not_reconnected(anyio_backend: str) -> None:
    """Code 1000 is the server ending the session on purpose, not a restart."""
    async with relayed_server(make_app(Stalls())) as (_, relay):
        with anyio.fail_after(LIMIT):
            async with WebSocketClient(url(relay), reconnect=FAST) as client:
                relay.close_normally()
                await client.wait_closed()
                assert client.close_code == 1000
                assert client.closed
                assert client.reconnect_error is None
                with pytest.raises(ConnectionClosed) as caught:
                    await client.invoke_tool("echo", {"message": "x"})
                assert caught.value.close_code == 1000
                assert client.reconnects == 0
