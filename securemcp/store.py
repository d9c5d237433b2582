"""Message history behind a small interface: in memory, or durable in SQLite.

:class:`MessageStore` is what tools program against (the chat example's
history); :class:`MemoryMessageStore` serves tests and throwaway servers,
:class:`SQLiteMessageStore` keeps the history in an embedded database. A later
multi-process deployment can put a shared database behind the same protocol
without touching the tools.

Every method is async. The SQLite store runs ``sqlite3`` in a worker thread,
one operation at a time on one connection, so the event loop never waits on
the disk.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread

_Messages = list["StoredMessage"]
"""A list of messages (the alias keeps the ``list`` methods from shadowing the type)."""
_Names = list[str]

__all__ = ["MemoryMessageStore", "MessageStore", "SQLiteMessageStore", "StoredMessage"]


def utc_timestamp() -> str:
    """Now, as ISO 8601 UTC to the second: ``2025-11-03T10:00:00Z``."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as stored: ids increase with every append, across rooms."""

    id: int
    room: str
    username: str
    message: str
    timestamp: str
    """ISO 8601 UTC, to the second (``2025-11-03T10:00:00Z``)."""

    def as_dict(self) -> dict[str, Any]:
        """The message as plain JSON data."""
        return {
            "id": self.id,
            "room": self.room,
            "username": self.username,
            "message": self.message,
            "timestamp": self.timestamp,
        }


class MessageStore(Protocol):
    """Where messages are kept, per room, in the order they were appended."""

    async def append(self, room: str, username: str, message: str) -> StoredMessage:
        """Store a message; once this returns, it is kept (durably, for a durable store)."""
        ...

    async def list(self, room: str, *, before: int | None = None, limit: int = 10) -> _Messages:
        """The latest ``limit`` messages of ``room`` with an id below ``before``, oldest first."""
        ...

    async def count(self, room: str | None = None) -> int:
        """Messages in ``room``, or in every room."""
        ...

    async def users(self) -> _Names:
        """Everyone who has a message stored, sorted."""
        ...

    async def rooms(self) -> dict[str, int]:
        """Every room that has messages, with its message count, sorted by name."""
        ...

    async def clear(self, room: str | None = None) -> int:
        """Delete the messages of ``room`` (or all); how many were deleted."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources."""
        ...


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")


class MemoryMessageStore:
    """A :class:`MessageStore` in memory, bounded: past ``max_messages`` the oldest go."""

    def __init__(self, max_messages: int = 100_000) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.max_messages = max_messages
        # Insertion-ordered by id: deleting the oldest is deleting the first key.
        self._messages: dict[int, StoredMessage] = {}
        self._by_room: dict[str, dict[int, StoredMessage]] = {}
        self._next_id = 1

    async def append(self, room: str, username: str, message: str) -> StoredMessage:
        """Store a message (kept until cleared, or pushed out past ``max_messages``)."""
        stored = StoredMessage(self._next_id, room, username, message, utc_timestamp())
        self._next_id += 1
        self._messages[stored.id] = stored
        self._by_room.setdefault(room, {})[stored.id] = stored
        if len(self._messages) > self.max_messages:
            oldest = self._messages.pop(next(iter(self._messages)))
            self._forget(oldest)
        return stored

    def _forget(self, stored: StoredMessage) -> None:
        in_room = self._by_room[stored.room]
        del in_room[stored.id]
        if not in_room:
            del self._by_room[stored.room]

    async def list(self, room: str, *, before: int | None = None, limit: int = 10) -> _Messages:
        """The latest ``limit`` messages of ``room`` with an id below ``before``, oldest first."""
        _check_limit(limit)
        found: _Messages = []
        for stored in reversed(self._by_room.get(room, {}).values()):
            if before is not None and stored.id >= before:
                continue
            found.append(stored)
            if len(found) == limit:
                break
        found.reverse()
        return found

    async def count(self, room: str | None = None) -> int:
        """Messages in ``room``, or in every room."""
        if room is None:
            return len(self._messages)
        return len(self._by_room.get(room, ()))

    async def users(self) -> _Names:
        """Everyone who has a message stored, sorted."""
        return sorted({stored.username for stored in self._messages.values()})

    async def rooms(self) -> dict[str, int]:
        """Every room that has messages, with its message count, sorted by name."""
        return {room: len(self._by_room[room]) for room in sorted(self._by_room)}

    async def clear(self, room: str | None = None) -> int:
        """Delete the messages of ``room`` (or all); how many were deleted."""
        if room is None:
            deleted = len(self._messages)
            self._messages.clear()
            self._by_room.clear()
            return deleted
        in_room = self._by_room.pop(room, {})
        for message_id in in_room:
            del self._messages[message_id]
        return len(in_room)

    async def aclose(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    username TEXT NOT NULL,
    message TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
"""


class SQLiteMessageStore:
    """A durable :class:`MessageStore` in an SQLite database file (``":memory:"`` allowed).

    The database runs in WAL mode. An :meth:`append` returns only after its
    transaction committed, so an acknowledged message survives the server
    being killed (SIGKILL) at any moment after: with ``synchronous="NORMAL"``
    (the default) the commit is in the WAL file, which the operating system
    keeps when the process dies; only a power loss or OS crash can lose the
    last commits. ``synchronous="FULL"`` adds an fsync per commit, surviving
    those too, at the cost of a disk flush per message.

    ``AUTOINCREMENT`` keeps ids increasing even after :meth:`clear`: an id is
    never reused, so a client paginating with ``before`` never sees a message
    replaced by another.
    """

    def __init__(self, path: str, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = path
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        # One operation at a time: the connection is used by one thread at once.
        self._limiter: anyio.CapacityLimiter | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        # Not abandoned on cancel: a commit under way finishes before the caller
        # learns of the cancellation, so the database is never left mid-statement.
        return await anyio.to_thread.run_sync(self._in_thread, fn, *args, limiter=self._limiter)

    def _in_thread(self, fn: Any, *args: Any) -> Any:
        if self._db is None:
            self._db = self._open()
        return fn(self._db, *args)

    def _open(self) -> sqlite3.Connection:
        # Autocommit (isolation_level=None): each statement is its own
        # transaction, committed when execute() returns.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    async def append(self, room: str, username: str, message: str) -> StoredMessage:
        """Store a message; committed to the database when this returns."""
        result: StoredMessage = await self._run(_append, room, username, message)
        return result

    async def list(self, room: str, *, before: int | None = None, limit: int = 10) -> _Messages:
        """The latest ``limit`` messages of ``room`` with an id below ``before``, oldest first."""
        _check_limit(limit)
        result: _Messages = await self._run(_list, room, before, limit)
        return result

    async def count(self, room: str | None = None) -> int:
        """Messages in ``room``, or in every room."""
        if room is None:
            return int(await self._run(_scalar, "SELECT count(*) FROM messages"))
        return int(await self._run(_scalar, "SELECT count(*) FROM messages WHERE room = ?", room))

    async def users(self) -> _Names:
        """Everyone who has a message stored, sorted."""
        rows = await self._run(_rows, "SELECT DISTINCT username FROM messages ORDER BY username")
        return [row[0] for row in rows]

    async def rooms(self) -> dict[str, int]:
        """Every room that has messages, with its message count, sorted by name."""
        rows = await self._run(
            _rows, "SELECT room, count(*) FROM messages GROUP BY room ORDER BY room"
        )
        return {row[0]: row[1] for row in rows}

    async def clear(self, room: str | None = None) -> int:
        """Delete the messages of ``room`` (or all); how many were deleted."""
        if room is None:
            return int(await self._run(_delete, "DELETE FROM messages"))
        return int(await self._run(_delete, "DELETE FROM messages WHERE room = ?", room))

    async def aclose(self) -> None:
        """Close the database (a later call opens it again)."""
        if self._db is not None:
            await self._run(_close)
            self._db = None

    def close(self) -> None:
        """Close the database from synchronous code, once no operation is under way."""
        db, self._db = self._db, None
        if db is not None:
            db.close()
        # A limiter belongs to the event loop that made it; the next loop makes its own.
        self._limiter = None


# What runs in the worker thread, on the store's one connection.


def _append(db: sqlite3.Connection, room: str, username: str, message: str) -> StoredMessage:
    timestamp = utc_timestamp()
    cursor = db.execute(
        "INSERT INTO messages (room, username, message, timestamp) VALUES (?, ?, ?, ?)",
        (room, username, message, timestamp),
    )
    message_id = cursor.lastrowid
    assert message_id is not None  # an INSERT into a rowid table always sets it
    return StoredMessage(message_id, room, username, message, timestamp)


def _list(db: sqlite3.Connection, room: str, before: int | None, limit: int) -> list[StoredMessage]:
    if before is None:
        rows = db.execute(
            "SELECT id, room, username, message, timestamp FROM messages"
            " WHERE room = ? ORDER BY id DESC LIMIT ?",
            (room, limit),
        ).fetchall()
    else:
        rows = db.execute(
            "SELECT id, room, username, message, timestamp FROM messages"
            " WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (room, before, limit),
        ).fetchall()
    return [StoredMessage(*row) for row in reversed(rows)]


def _scalar(db: sqlite3.Connection, sql: str, *args: Any) -> Any:
    return db.execute(sql, args).fetchone()[0]


def _rows(db: sqlite3.Connection, sql: str, *args: Any) -> list[Any]:
    return db.execute(sql, args).fetchall()


def _delete(db: sqlite3.Connection, sql: str, *args: Any) -> int:
    return db.execute(sql, args).rowcount


def _close(db: sqlite3.Connection) -> None:
    db.close()
