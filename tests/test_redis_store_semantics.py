"""RedisMessageStore against a real redis-server: ids, clearing, prefixes, the memory store model.

Ids stay unique and increasing across rooms and processes (two store
objects on one Redis), ``clear`` leaves exact counts and nothing behind,
prefixes keep stores apart, and random operations give what
``MemoryMessageStore`` gives. Outages, replicas and serving are in
``test_redis_store.py``.
"""

from __future__ import annotations

import random

import anyio
import pytest

from securemcp.redis import RedisMessageStore
from securemcp.store import MemoryMessageStore, StoredMessage

from .redis_server import RedisServer
from .redis_store_helpers import TIMEOUT

pytestmark = pytest.mark.anyio


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
