"""The message stores: the same behaviour in memory, in SQLite and in Redis."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from securemcp.redis import RedisMessageStore
from securemcp.store import MemoryMessageStore, MessageStore, SQLiteMessageStore

from .redis_server import RedisServer


def files_held_open(directory: Path) -> list[str]:
    """The files in ``directory`` this process has open (Linux: ``/proc/self/fd``)."""
    descriptors = Path("/proc/self/fd")
    if not descriptors.is_dir():
        pytest.skip("needs /proc/self/fd to list open files")
    prefix = str(directory.resolve()) + os.sep
    held = []
    for descriptor in descriptors.iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:  # closed since the listing (the listing's own descriptor)
            continue
        if target.startswith(prefix):
            held.append(target)
    return held


@pytest.fixture(params=["memory", "sqlite-file", "sqlite-memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    if request.param == "redis":
        # Only this parameter starts a redis-server (one of its own per test).
        server: RedisServer = request.getfixturevalue("redis_server")
        async with RedisMessageStore(server.url) as redis_store:
            try:
                yield redis_store
            finally:
                await redis_store.aclose()
        return
    made: MessageStore
    if request.param == "memory":
        made = MemoryMessageStore()
    elif request.param == "sqlite-file":
        made = SQLiteMessageStore(str(tmp_path / "chat.db"))
    else:
        made = SQLiteMessageStore(":memory:")
    try:
        yield made
    finally:
        await made.aclose()


@pytest.mark.anyio
async def test_append_numbers_and_stamps_messages(store: MessageStore) -> None:
    first = await store.append("general", "Ann", "hello")
    second = await store.append("other", "Bob", "hi")
    assert second.id > first.id
    assert (first.room, first.username, first.message) == ("general", "Ann", "hello")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first.timestamp)
    assert first.as_dict() == {
        "id": first.id,
        "room": "general",
        "username": "Ann",
        "message": "hello",
        "timestamp": first.timestamp,
    }


@pytest.mark.anyio
async def test_list_pages_backwards_oldest_first(store: MessageStore) -> None:
    sent = [await store.append("r", "Ann", f"m{index}") for index in range(25)]
    await store.append("elsewhere", "Bob", "not in r")
    latest = await store.list("r", limit=10)
    assert [m.message for m in latest] == [f"m{index}" for index in range(15, 25)]
    page = await store.list("r", before=latest[0].id, limit=10)
    assert [m.message for m in page] == [f"m{index}" for index in range(5, 15)]
    last = await store.list("r", before=page[0].id, limit=10)
    assert [m.message for m in last] == [f"m{index}" for index in range(5)]
    assert await store.list("r", before=sent[0].id, limit=10) == []
    assert await store.list("nobody", limit=5) == []
    with pytest.raises(ValueError, match="limit"):
        await store.list("r", limit=0)


@pytest.mark.anyio
async def test_counts_users_rooms_and_clear(store: MessageStore) -> None:
    for room, user in [("b", "Cyd"), ("a", "Ann"), ("a", "Bob"), ("b", "Ann")]:
        await store.append(room, user, "x")
    assert await store.count() == 4
    assert await store.count("a") == 2
    assert await store.count("zzz") == 0
    assert await store.users() == ["Ann", "Bob", "Cyd"]
    assert await store.rooms() == {"a": 2, "b": 2}
    assert await store.clear("a") == 2
    assert await store.clear("a") == 0
    assert await store.rooms() == {"b": 2}
    assert await store.clear() == 2
    assert await store.count() == 0
    # Ids keep increasing after a clear: a page boundary never names a new message.
    again = await store.append("a", "Ann", "y")
    assert again.id > 4


@pytest.mark.anyio
async def test_the_memory_store_drops_the_oldest_past_its_bound() -> None:
    store = MemoryMessageStore(max_messages=3)
    await store.append("lonely", "Ann", "first")
    for index in range(5):
        await store.append("a" if index % 2 else "b", "Ann", f"m{index}")
    assert await store.count() == 3
    kept = await store.list("a", limit=10) + await store.list("b", limit=10)
    assert sorted(m.message for m in kept) == ["m2", "m3", "m4"]
    assert await store.rooms() == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="max_messages"):
        MemoryMessageStore(max_messages=0)


@pytest.mark.anyio
async def test_sqlite_keeps_messages_across_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "chat.db")
    first = SQLiteMessageStore(path, synchronous="FULL")
    stored = await first.append("general", "Ann", "persisted")
    assert files_held_open(tmp_path) != []  # the database, its WAL and shared memory
    await first.aclose()
    assert files_held_open(tmp_path) == []
    await first.aclose()  # twice: harmless
    second = SQLiteMessageStore(path)
    try:
        assert await second.list("general") == [stored]
        assert (tmp_path / "chat.db-wal").exists(), "WAL mode"
    finally:
        second.close()
        second.close()
    assert files_held_open(tmp_path) == []


def test_sqlite_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteMessageStore(":memory:", synchronous="OFF")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_bad_database_path_raises_and_leaks_nothing(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is no database" * 100)
    store = SQLiteMessageStore(str(tmp_path / "not-a-db"))
    try:
        with pytest.raises(sqlite3.DatabaseError, match="not a database") as failure:
            await store.count()
        # The store closed the file itself, not leaving it to the garbage
        # collector: here the caller still holds the exception, and with it
        # the frames of the failed open.
        error = failure.value
        assert files_held_open(tmp_path) == [], f"open while the caller holds {error!r}"
        # Nothing half-open was kept: the next operation tries again, and fails alike.
        with pytest.raises(sqlite3.DatabaseError, match="not a database"):
            await store.append("general", "Ann", "lost")
        assert files_held_open(tmp_path) == []
    finally:
        await store.aclose()
    assert files_held_open(tmp_path) == []


@pytest.mark.anyio
async def test_strings_round_trip_exactly(store: MessageStore) -> None:
    # Separators and hash-tag braces a key-value store might trip on, unicode, the empty string.
    odd = ["", " ", "a:b", "{securemcp}", "x\ny\r\n", "nul\x00byte", "été ✓ 🎉", "\u202e"]
    sent = [await store.append(text, text or "anon", text) for text in odd]
    for stored in sent:
        assert await store.list(stored.room, limit=5) == [stored]
        assert await store.count(stored.room) == 1
    assert list((await store.rooms()).items()) == [(text, 1) for text in sorted(odd)]
    assert await store.users() == sorted({text or "anon" for text in odd})
    assert await store.clear("a:b") == 1
    assert await store.count("a") == 0
    assert await store.count() == len(odd) - 1


@pytest.mark.anyio
async def test_before_may_name_any_id(store: MessageStore) -> None:
    a1 = await store.append("a", "Ann", "a1")
    b1 = await store.append("b", "Bob", "b1")
    a2 = await store.append("a", "Ann", "a2")
    # An id from another room, one never stored, and bounds past either end.
    assert await store.list("a", before=b1.id) == [a1]
    assert await store.list("a", before=a2.id + 1000) == [a1, a2]
    assert await store.list("a", before=2**62) == [a1, a2]
    assert await store.list("a", before=0) == []
    assert await store.list("a", before=-5) == []
    assert await store.list("a", limit=1) == [a2]
