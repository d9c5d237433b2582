"""RedisMessageStore against a real redis-server: durability, outages, processes, serving.

The behaviour every store shares is in ``test_store.py`` (its ``redis``
parameter); here is what only a shared, separate server brings: it can be
killed and restarted, stopped, reached by several processes, and be down
while a client calls a tool.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import pytest

from securemcp import SecureMCP, Unavailable
from securemcp.redis import RedisMessageStore
from securemcp.store import MemoryMessageStore, StoredMessage
from securemcp.transport import WebSocketClient, WebSocketTransport

from .redis_server import RedisServer

TIMEOUT = 1.0
"""The stores' operation bound here: short, so outage tests stay quick."""
SLACK = 1.0
"""How much past ``TIMEOUT`` an Unavailable may come (a loaded 2-core machine)."""

pytestmark = pytest.mark.anyio

_F = TypeVar("_F", bound=Callable[..., Any])


def coredis_leaks_on_failed_connections(test: _F) -> _F:
    """For tests where Redis goes down: ignore the warnings of what coredis leaks then.

    coredis 6.9 makes a connection's memory streams before connecting and
    closes them only if the connection ran: every refused or abandoned attempt
    leaves some for the garbage collector, which warns. The test collects them
    itself, so they are ignored there and cannot surface in a later test.
    """
    test = pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <function MemoryObject(Send|Receive)Stream.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    )(test)
    return cast(_F, pytest.mark.usefixtures("collect_garbage")(test))


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


def unavailable_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "securemcp.redis" and "unavailable" in r.getMessage()
    ]


def back_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "securemcp.redis"
        and r.getMessage().endswith(" is back")
        and "unavailable" not in r.getMessage()
    ]


async def expect_unavailable(operation: Any) -> float:
    """Await ``operation()``; assert it raised Unavailable (-31503) in time; the seconds it took."""
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await operation()
    elapsed = time.monotonic() - started
    assert caught.value.code == -31503
    assert elapsed < TIMEOUT + SLACK, f"Unavailable after {elapsed:.2f} s"
    return elapsed


@coredis_leaks_on_failed_connections
async def test_acknowledged_messages_survive_sigkill(redis_server: RedisServer) -> None:
    async with RedisMessageStore(redis_server.url, timeout=TIMEOUT) as store:
        sent = [
            await store.append(f"room{index % 3}", f"user{index % 4}", f"message {index} ✓")
            for index in range(60)
        ]
        redis_server.kill()  # no shutdown, no save: what a crash does
        redis_server.restart()
        # A new store object (another process) reads everything back; so does the old
        # one, once it has dropped the connection the crash cut (a call racing that
        # may get Unavailable, as any call in flight during an outage).
        async with RedisMessageStore(redis_server.url, timeout=TIMEOUT) as fresh:
            await until_available(store.count)
            for reader in (fresh, store):
                for room in ("room0", "room1", "room2"):
                    expected = [m for m in sent if m.room == room]
                    assert await reader.list(room, limit=100) == expected
                assert await reader.count() == 60
                assert await reader.rooms() == {"room0": 20, "room1": 20, "room2": 20}
                assert await reader.users() == ["user0", "user1", "user2", "user3"]
            after = await fresh.append("room0", "user0", "after the crash")
            assert after.id > max(m.id for m in sent)
            assert (await store.append("room9", "user9", "and again")).id > after.id


async def until_available(operation: Any, deadline: float = 10.0) -> None:
    """Call ``operation()`` until it does not raise Unavailable, failing after ``deadline``."""
    with anyio.fail_after(deadline):
        while True:
            try:
                await operation()
            except Unavailable:
                await anyio.sleep(0.02)
            else:
                return


@coredis_leaks_on_failed_connections
async def test_an_outage_raises_unavailable_in_time_and_is_logged_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.redis")
    async with RedisMessageStore(redis_server.url, timeout=TIMEOUT) as store:
        first = await store.append("general", "Ann", "before")
        redis_server.kill()
        for _ in range(3):
            await expect_unavailable(lambda: store.append("general", "Ann", "lost"))
            await expect_unavailable(lambda: store.list("general"))
            await expect_unavailable(store.count)
            await expect_unavailable(store.clear)
        assert len(unavailable_records(caplog)) == 1, caplog.text
        assert "message store" in unavailable_records(caplog)[0]
        assert back_records(caplog) == []

        redis_server.start()
        # Nothing from the failed calls was acknowledged, and the first call after works.
        assert await store.list("general") == [first]
        assert len(back_records(caplog)) == 1, caplog.text
        assert (await store.append("general", "Ann", "after")).id > first.id
        assert len(unavailable_records(caplog)) == 1


@coredis_leaks_on_failed_connections
async def test_a_hung_redis_gives_unavailable_within_the_timeout(redis_server: RedisServer) -> None:
    async with RedisMessageStore(redis_server.url, timeout=TIMEOUT / 2) as store:
        kept = await store.append("general", "Ann", "kept")
        assert redis_server.process is not None
        pid = redis_server.process.pid
        os.kill(pid, signal.SIGSTOP)  # accepts nothing, answers nothing: a hang, not a refusal
        try:
            elapsed = await expect_unavailable(lambda: store.list("general"))
            assert elapsed >= store.timeout * 0.9, "gave up before the timeout"
            await expect_unavailable(lambda: store.append("general", "Ann", "maybe"))
        finally:
            os.kill(pid, signal.SIGCONT)
        # The late answers to the abandoned calls must not be read as answers to new ones.
        for _ in range(3):
            page = await store.list("general", limit=10)
            assert page[0] == kept
            assert [m.message for m in page[1:]] in ([], ["maybe"])
            assert await store.count() == len(page)
            assert await store.users() == ["Ann"]


async def test_ids_increase_across_rooms_and_processes(redis_server: RedisServer) -> None:
    per_task = 40
    got: dict[str, list[StoredMessage]] = {}

    async def writer(store: RedisMessageStore, name: str) -> None:
        mine = got.setdefault(name, [])
        for index in range(per_task):
            mine.append(await store.append(f"room{index % 3}", name, f"{name}-{index}"))

    # Two store objects stand for two processes: separate clients, one Redis.
    async with (
        RedisMessageStore(redis_server.url, timeout=5) as one,
        RedisMessageStore(redis_server.url, timeout=5) as two,
    ):
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for name, store in [("a", one), ("b", two), ("c", one), ("d", two)]:
                    tg.start_soon(writer, store, name)
        for messages in got.values():
            ids = [m.id for m in messages]
            assert ids == sorted(ids), "one writer's appends got decreasing ids"
        every = sorted(m.id for messages in got.values() for m in messages)
        assert every == list(range(1, 4 * per_task + 1)), "an id was skipped or given twice"
        # Each room's history is in id order, whichever process wrote it.
        for room in ("room0", "room1", "room2"):
            history = await two.list(room, limit=1000)
            assert [m.id for m in history] == sorted(m.id for m in history)
            assert len(history) == await one.count(room)


async def test_clear_keeps_users_rooms_and_counts_exact(redis_server: RedisServer) -> None:
    async with RedisMessageStore(redis_server.url, timeout=TIMEOUT) as store:
        for room, user in [("a", "Ann"), ("a", "Bob"), ("a", "Ann"), ("b", "Bob"), ("b", "Cyd")]:
            await store.append(room, user, "x")
        assert await store.clear("a") == 3
        assert await store.users() == ["Bob", "Cyd"]  # Ann wrote only in a, Bob in both
        assert await store.rooms() == {"b": 2}
        assert (await store.count(), await store.count("a"), await store.count("b")) == (2, 0, 2)
        assert await store.clear("b") == 2
        assert (await store.users(), await store.rooms(), await store.count()) == ([], {}, 0)
        # Nothing is left behind but the id counter (ids are never reused).
        assert redis_server.command("keys", "*").split() == ["{securemcp}:messages:next-id"]
        assert (await store.append("a", "Ann", "y")).id == 6


async def test_behaves_like_the_memory_store_over_random_operations(
    redis_server: RedisServer,
) -> None:
    rng = random.Random(20261206)
    model = MemoryMessageStore()
    rooms = ["a", "b", "c", "d"]
    users = ["Ann", "Bob", "Cyd"]
    async with RedisMessageStore(redis_server.url, timeout=5) as store:
        for step in range(300):
            choice = rng.random()
            if choice < 0.6:
                room, user = rng.choice(rooms), rng.choice(users)
                got, want = (
                    await store.append(room, user, f"m{step}"),
                    await model.append(room, user, f"m{step}"),
                )
                assert (got.id, got.room, got.username, got.message) == (
                    want.id,
                    want.room,
                    want.username,
                    want.message,
                )
            elif choice < 0.8:
                room = rng.choice(rooms)
                before = rng.choice([None, rng.randint(0, step + 2)])
                limit = rng.randint(1, 8)
                listed = await store.list(room, before=before, limit=limit)
                expected = await model.list(room, before=before, limit=limit)
                assert [(m.id, m.message) for m in listed] == [(m.id, m.message) for m in expected]
            elif choice < 0.97:
                which = rng.choice([None, *rooms])
                assert await store.count(which) == await model.count(which)
                assert await store.users() == await model.users()
                assert list((await store.rooms()).items()) == list((await model.rooms()).items())
            else:
                which = rng.choice([None, *rooms])
                assert await store.clear(which) == await model.clear(which)


async def test_prefixes_keep_stores_apart(redis_server: RedisServer) -> None:
    async with (
        RedisMessageStore(redis_server.url, prefix="app-one") as one,
        RedisMessageStore(redis_server.url, prefix="app-two") as two,
    ):
        a = await one.append("general", "Ann", "for one")
        b = await two.append("general", "Bob", "for two")
        assert a.id == b.id == 1  # each has its own ids
        assert await one.list("general") == [a]
        assert await two.list("general") == [b]
        assert (await one.users(), await two.users()) == (["Ann"], ["Bob"])
        assert await two.clear() == 1
        assert await one.list("general") == [a]
        assert await one.rooms() == {"general": 1}
        keys = redis_server.command("keys", "*").split()
        assert {key.partition(":")[0] for key in keys} == {"{app-one}", "{app-two}"}


async def test_writes_wait_for_replicas(redis_server: RedisServer, tmp_path: Path) -> None:
    directory = tmp_path / "replica"
    directory.mkdir()
    replica = RedisServer(directory)
    replica.start()
    try:
        # Sync at once (the default waits 5 s for more replicas to share a transfer).
        redis_server.command("config", "set", "repl-diskless-sync-delay", "0")
        replica.command("replicaof", "127.0.0.1", str(redis_server.port))
        # Until the replica's first acks after its sync, WAIT may take a second
        # more: warm up with writes under another prefix until one is confirmed.
        async with RedisMessageStore(redis_server.url, prefix="warm-up", replicas=1) as warm_up:
            await until_available(lambda: warm_up.append("warm-up", "test", "synced?"))
        async with RedisMessageStore(
            redis_server.url, timeout=2, replicas=1, replica_timeout=0.5
        ) as store:
            stored = await store.append("general", "Ann", "on two machines")
            # WAIT said so: the replica has it now, without waiting any further.
            assert "on two machines" in replica.command(
                "xrange", "{securemcp}:messages:history:general", "-", "+"
            )
            replica.kill()
            await wait_for(
                lambda: "connected_slaves:0" in redis_server.command("info", "replication")
            )
            started = time.monotonic()
            with pytest.raises(Unavailable, match="replica") as caught:
                await store.append("general", "Ann", "on one machine")
            assert caught.value.code == -31503
            assert 0.4 < time.monotonic() - started < 0.5 + SLACK
            assert (await store.list("general"))[0] == stored
    finally:
        replica.stop()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="replicas"):
        RedisMessageStore("redis://localhost", replicas=-1)
    with pytest.raises(ValueError, match="replica_timeout"):
        RedisMessageStore("redis://localhost", timeout=1, replica_timeout=1)
    with pytest.raises(ValueError, match="replica_timeout"):
        RedisMessageStore("redis://localhost", replica_timeout=0)
    assert RedisMessageStore("redis://localhost", timeout=3).replica_timeout == 1.5


async def test_a_store_that_is_not_open_says_so() -> None:
    store = RedisMessageStore("redis://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="not open"):
        await store.append("general", "Ann", "nowhere")
    await store.aclose()  # harmless, open or not


async def test_before_past_the_largest_stream_id(redis_server: RedisServer) -> None:
    async with RedisMessageStore(redis_server.url) as store:
        stored = await store.append("general", "Ann", "hi")
        assert await store.list("general", before=2**64) == [stored]
        assert await store.list("general", before=2**200) == [stored]


# Served: a tool that appends and lists, called over WebSocket


def chat_app(store: RedisMessageStore) -> SecureMCP:
    app = SecureMCP("history")
    app.uses(store)

    @app.tool()
    async def post(room: str, username: str, message: str) -> dict[str, Any]:
        """Store a message and return the room's latest messages."""
        stored = await store.append(room, username, message)
        latest = await store.list(room, limit=5)
        return {"stored": stored.as_dict(), "latest": [m.as_dict() for m in latest]}

    return app


@asynccontextmanager
async def serving(app: SecureMCP) -> AsyncIterator[str]:
    transport = WebSocketTransport(app, shutdown_grace=1, close_timeout=2)
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        yield f"ws://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def test_a_served_tool_appends_and_lists(redis_server: RedisServer) -> None:
    store = RedisMessageStore(redis_server.url, timeout=TIMEOUT)
    async with serving(chat_app(store)) as url, WebSocketClient(url, timeout=10) as client:
        first = await client.invoke_tool(
            "post", {"room": "general", "username": "Ann", "message": "hi"}
        )
        second = await client.invoke_tool(
            "post", {"room": "general", "username": "Bob", "message": "héllo"}
        )
        assert [m["message"] for m in second["latest"]] == ["hi", "héllo"]
        assert second["latest"][0] == first["stored"]
        assert second["stored"]["id"] > first["stored"]["id"]
    # The transport opened the store while serving and closed it after.
    with pytest.raises(RuntimeError, match="not open"):
        _ = store.client
    async with store:
        assert await store.count("general") == 2


@coredis_leaks_on_failed_connections
async def test_an_outage_reaches_the_client_as_unavailable(redis_server: RedisServer) -> None:
    store = RedisMessageStore(redis_server.url, timeout=TIMEOUT)
    params = {"room": "general", "username": "Ann", "message": "hi"}
    async with serving(chat_app(store)) as url, WebSocketClient(url, timeout=10) as client:
        await client.invoke_tool("post", params)
        redis_server.kill()
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await client.invoke_tool("post", params)
        assert time.monotonic() - started < TIMEOUT + SLACK
        assert caught.value.code == -31503
        assert "unavailable" in caught.value.message.lower()
        redis_server.start()
        again = await client.invoke_tool("post", params)
        assert [m["message"] for m in again["latest"]] == ["hi", "hi"]


async def wait_for(condition: Any, deadline: float = 10.0) -> None:
    """Poll ``condition()`` until true, failing after ``deadline`` seconds."""
    with anyio.fail_after(deadline):
        while not condition():  # noqa: ASYNC110 - a redis-cli answer, not an event to wait on
            await anyio.sleep(0.02)
