"""RedisBroker against a real redis-server: broadcast that spans processes and survives outages.

Two brokers on one Redis stand for two server processes (or machines): each
has its own subscribers and its own Redis connections, exactly as two
processes would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from securemcp import Context, SecureMCP
from securemcp.protocol import Limits
from securemcp.pubsub import Broker, Notification
from securemcp.redis import RedisBroker
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving
from .pubsub_helpers import WAIT, SlowReader, flood
from .redis_server import RedisServer


class Inbox:
    """A subscriber that records the notifications it is given."""

    def __init__(self) -> None:
        self.received: list[Notification] = []

    def deliver(self, notification: Notification) -> bool:
        self.received.append(notification)
        return True

    def params(self) -> list[Any]:
        return [notification.params for notification in self.received]


async def until(condition: Any, what: str) -> None:
    """Poll ``condition()`` until true; fail after ``WAIT`` seconds."""
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110 - the condition is another process's doing
            await anyio.sleep(0.01)


def channel_subscribers(redis: RedisServer, topic: str) -> int:
    """How many Redis connections subscribe to ``topic``'s channel (PUBSUB NUMSUB)."""
    answer = redis.command("PUBSUB", "NUMSUB", f"securemcp:topic:{topic}").split()
    return int(answer[-1])


def pubsub_connections(redis: RedisServer) -> int:
    """Connections in subscriber mode, by CLIENT LIST's ``P`` flag."""
    lines = redis.command("CLIENT", "LIST").splitlines()
    return sum(1 for line in lines if " flags=P " in f" {line} ")


@pytest.mark.anyio
async def test_a_publication_reaches_the_other_process_once_and_the_own_at_once(
    redis_server: RedisServer,
) -> None:
    first, second = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    assert isinstance(first, Broker)
    async with first, second:
        here, there = Inbox(), Inbox()
        first.subscribe("room:a", here)
        second.subscribe("room:a", there)
        assert await first.live()
        assert await second.live()

        # Local delivery happens inside publish(); the count is the local one.
        assert first.publish("room:a", "chat.message", {"n": 1}) == 1
        assert here.params() == [{"n": 1}]
        await until(lambda: there.params() == [{"n": 1}], "the other process got it")
        assert second.publish("room:a", "chat.message", {"n": 2}) == 1
        await until(lambda: here.params() == [{"n": 1}, {"n": 2}], "the first got the second's")
        # A marker sent after: once it arrived, nothing else (no echo) came.
        first.publish("room:a", "marker")
        await until(lambda: there.received[-1].method == "marker", "the marker arrived")
        assert here.params() == [{"n": 1}, {"n": 2}, None]
        assert there.params() == [{"n": 1}, {"n": 2}, None]


@pytest.mark.anyio
async def test_one_subscriber_connection_per_process_following_the_local_topics(
    redis_server: RedisServer,
) -> None:
    broker = RedisBroker(redis_server.url)
    async with broker:
        ann, bob = Inbox(), Inbox()
        for topic in ("t1", "t2", "t3"):
            broker.subscribe(topic, ann)
        broker.subscribe("t1", bob)
        assert await broker.live()
        assert pubsub_connections(redis_server) == 1
        assert [channel_subscribers(redis_server, t) for t in ("t1", "t2", "t3")] == [1, 1, 1]

        broker.unsubscribe("t1", ann)  # bob still follows t1
        broker.unsubscribe_all(ann)
        assert await broker.live()
        await until(lambda: channel_subscribers(redis_server, "t2") == 0, "t2 unsubscribed")
        assert channel_subscribers(redis_server, "t1") == 1
        assert channel_subscribers(redis_server, "t3") == 0
        assert broker.topics() == ["t1"]
        assert broker.subscriber_count("t1") == 1
    # Closed: no connection left behind.
    await until(lambda: pubsub_connections(redis_server) == 0, "the subscriber closed")


@pytest.mark.anyio
async def test_redis_restart_resubscribes_without_any_subscriber_doing_anything(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "securemcp.redis")
    here, there = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    async with here, there:
        inbox = Inbox()
        here.subscribe("room", inbox)
        assert await here.live()
        there.publish("room", "m", "before")
        await until(lambda: inbox.params() == ["before"], "delivered before the crash")

        redis_server.kill()
        # While Redis is down, publishing (synchronous) never raises, and local
        # subscribers still get everything.
        local = Inbox()
        there.subscribe("room", local)
        for n in range(50):
            assert there.publish("room", "m", f"during {n}") == 1
        assert len(local.received) == 50
        await until(
            lambda: "broker at redis://127.0.0.1" in caplog.text and "unavailable" in caplog.text,
            "the outage is logged",
        )

        redis_server.start()

        async def probe() -> bool:
            there.publish("room", "m", "after")
            await anyio.sleep(0.02)
            return "after" in inbox.params()

        with anyio.fail_after(WAIT):
            while not await probe():
                pass
        assert "before" in inbox.params()
    messages = [record.getMessage() for record in caplog.records]
    outages = [m for m in messages if "unavailable" in m]
    comebacks = [m for m in messages if m.endswith("is back") and m not in outages]
    # Once per broker, not once per publication or per retry.
    assert 1 <= len(outages) <= 2, outages
    assert 1 <= len(comebacks) <= 2


@pytest.mark.anyio
async def test_a_malformed_publication_on_the_channel_is_dropped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    broker = RedisBroker(redis_server.url)
    async with broker:
        inbox = Inbox()
        broker.subscribe("room", inbox)
        assert await broker.live()
        redis_server.command("PUBLISH", "securemcp:topic:room", "{not json")
        redis_server.command("PUBLISH", "securemcp:topic:room", '{"o": "x", "m": 5, "p": 1}')
        redis_server.command("PUBLISH", "securemcp:topic:room", '{"o": "x", "m": "ok", "p": 2}')
        await until(lambda: inbox.received, "the good one arrived")
        assert [(n.method, n.params) for n in inbox.received] == [("ok", 2)]
    assert "malformed publication" in caplog.text


@pytest.mark.anyio
async def test_a_full_backlog_drops_remote_delivery_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: every attempt to reach Redis fails at once.
    broker = RedisBroker("redis://127.0.0.1:1/0", max_backlog=2, timeout=0.5)
    async with broker:
        inbox = Inbox()
        broker.subscribe("room", inbox)
        for n in range(100):
            assert broker.publish("room", "m", n) == 1
        assert not await broker.live()
    assert inbox.params() == list(range(100))
    assert caplog.text.count("broker backlog full") == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_backlog"):
        RedisBroker("redis://127.0.0.1/0", max_backlog=0)
    with pytest.raises(ValueError, match="reconnect_delay"):
        RedisBroker("redis://127.0.0.1/0", reconnect_delay=3, max_reconnect_delay=1)
    with pytest.raises(ValueError, match="timeout"):
        RedisBroker("redis://127.0.0.1/0", timeout=0)
    with pytest.raises(ValueError, match="prefix"):
        RedisBroker("redis://127.0.0.1/0", prefix="{x}")


# Two servers (two machines, in effect) on one Redis


def room_app() -> SecureMCP:
    app = SecureMCP("rooms")

    @app.tool()
    async def join(topic: str, ctx: Context) -> bool:
        ctx.subscribe(topic)
        return await ctx.subscriptions_live()

    @app.tool()
    async def say(topic: str, text: str, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"text": text})

    @app.tool()
    async def say_big(topic: str, size: int, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"text": "x" * size})

    return app


@asynccontextmanager
async def two_servers(
    redis: RedisServer, limits: Limits | None = None
) -> AsyncIterator[tuple[int, int]]:
    async with AsyncExitStack() as stack:
        ports = []
        for _ in range(2):
            transport = WebSocketTransport(
                room_app(), broker=RedisBroker(redis.url), limits=limits, shutdown_grace=1
            )
            ports.append(await stack.enter_async_context(serving(transport)))
        yield ports[0], ports[1]


@pytest.mark.anyio
async def test_a_client_on_one_server_hears_live_what_a_client_on_the_other_says(
    redis_server: RedisServer,
) -> None:
    async with (
        two_servers(redis_server) as (a, b),
        WebSocketClient(f"ws://127.0.0.1:{a}") as ann,
        WebSocketClient(f"ws://127.0.0.1:{b}") as bob,
    ):
        assert await ann.invoke_tool("join", {"topic": "room"}) is True
        assert await bob.invoke_tool("join", {"topic": "room"}) is True
        heard: dict[str, list[str]] = {"ann": [], "bob": []}

        async def listen(name: str, client: WebSocketClient, count: int) -> None:
            async for method, params in client.notifications():
                assert method == "said"
                heard[name].append(params["text"])
                if len(heard[name]) == count:
                    return

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen, "ann", ann, 20)
                tg.start_soon(listen, "bob", bob, 20)
                for n in range(10):
                    await bob.invoke_tool("say", {"topic": "room", "text": f"bob {n}"})
                    await ann.invoke_tool("say", {"topic": "room", "text": f"ann {n}"})
        # Each sender's messages arrive everywhere in the order sent.
        for name in ("ann", "bob"):
            for sender in ("ann", "bob"):
                mine = [t for t in heard[name] if t.startswith(sender)]
                assert mine == [f"{sender} {n}" for n in range(10)]


@pytest.mark.anyio
async def test_a_slow_subscriber_on_one_server_is_dropped_with_1013_and_slows_nobody(
    redis_server: RedisServer,
) -> None:
    limits = Limits(max_pending_output=256 * 1024)
    rounds, size = 200, 64 * 1024
    async with two_servers(redis_server, limits) as (a, b), AsyncExitStack() as stack:
        slow = await anyio.to_thread.run_sync(SlowReader, a)
        stack.callback(slow.sock.close)
        assert await anyio.to_thread.run_sync(lambda: slow.call("join", topic="t")) is True
        async with (
            WebSocketClient(f"ws://127.0.0.1:{a}", max_queued_notifications=rounds + 10) as fast,
            WebSocketClient(f"ws://127.0.0.1:{b}") as sender,
        ):
            assert await fast.invoke_tool("join", {"topic": "t"}) is True
            with anyio.fail_after(WAIT * 3):
                received = await flood(sender, fast, rounds, size)
            # The fast client on the slow one's server got all 12.5 MiB.
            assert received == rounds
        await anyio.to_thread.run_sync(slow.read_to_the_end)
        assert slow.close_code == 1013
        assert len(slow.messages) < rounds
