"""RedisMessageStore against a real redis-server: durability, outages, replicas, serving.

The behaviour every store shares is in ``test_store.py`` (its ``redis``
parameter), ids, clearing and prefixes in ``test_redis_store_semantics.py``;
here is what only a shared, separate server brings: it can be killed and
restarted, stopped, replicated, and be down while a client calls a tool.
"""

from __future__ import annotations

import gc
import logging
import os
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
from securemcp.transport import WebSocketClient, WebSocketTransport

from .redis_server import RedisServer
from .redis_store_helpers import SLACK, TIMEOUT

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
