"""The message history in Redis: one stream per room, shared by every process.

Key layout (``P`` is the store's prefix as a hash tag, ``{securemcp}``, so
every key of one store lives in one cluster slot and each script may touch
them all)::

    P:messages:next-id          INCR counter: the last id handed out (never reset)
    P:messages:total            messages stored, in every room
    P:messages:rooms            hash: room -> messages stored in it
    P:messages:users            hash: username -> messages stored by them
    P:messages:history:<room>   stream of the room; entry id ``<id>-0``, fields u, m, t
    P:messages:authors:<room>   hash: username -> their messages in that room

The counts are kept by the same Lua scripts that add and delete messages, so
``count``, ``rooms`` and ``users`` read one key instead of scanning history,
and stay exact after ``clear``: ``authors:<room>`` is what lets ``clear(room)``
take its authors off ``users`` without reading the room's messages.
"""

from __future__ import annotations

from typing import Any, Self

import coredis.exceptions
from coredis.commands.script import Script

from securemcp.errors import Unavailable
from securemcp.store import StoredMessage, _check_limit, utc_timestamp

from ._client import RedisResource

__all__ = ["RedisMessageStore"]

_Messages = list[StoredMessage]
_Names = list[str]

_MAX_STREAM_MS = 2**64 - 1
"""The largest first part of a stream id: a ``before`` past it means "no bound"."""

# Stream ids follow our ids (``<id>-0``), so XREVRANGE pages by message id
# directly and a stream never needs a second index. Lua numbers are doubles:
# ``%d`` prints the id exactly up to 2**53, far past any realistic count.
_APPEND = Script[bytes](
    script="""
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], string.format('%d-0', id), 'u', ARGV[2], 'm', ARGV[3], 't', ARGV[4])
redis.call('INCR', KEYS[3])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
redis.call('HINCRBY', KEYS[6], ARGV[2], 1)
return id
"""
)
"""KEYS: next-id, history, total, rooms, users, authors. ARGV: room, username, message, time."""

_CLEAR_ROOM = Script[bytes](
    script="""
local n = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
if n == 0 then return 0 end
local authors = redis.call('HGETALL', KEYS[2])
for i = 1, #authors, 2 do
  if redis.call('HINCRBY', KEYS[5], authors[i], -tonumber(authors[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[5], authors[i])
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DECRBY', KEYS[3], n)
return n
"""
)
"""KEYS: history, authors, total, rooms, users. ARGV: room."""

# The per-room keys cannot be listed in KEYS before the script reads the
# rooms hash; they share the hash tag, so they are in the script's slot.
_CLEAR_ALL = Script[bytes](
    script="""
local rooms = redis.call('HKEYS', KEYS[2])
for _, room in ipairs(rooms) do
  redis.call('DEL', ARGV[1] .. room, ARGV[2] .. room)
end
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return n
"""
)
"""KEYS: total, rooms, users. ARGV: history key prefix, authors key prefix."""


class RedisMessageStore(RedisResource):
    """A :class:`~securemcp.store.MessageStore` in Redis, shared by every process using it.

    Open it for the server's lifetime with ``app.uses(RedisMessageStore(url))``
    (or ``async with``). Behaves as :class:`~securemcp.store.SQLiteMessageStore`:
    ids increase with every append across rooms and are never reused, even
    after :meth:`clear`, across every process on the same Redis and ``prefix``.
    Each append is one Lua script, so a message, its id and the counts are
    stored together or not at all.

    What survives what: :meth:`append` returns once Redis has executed the
    write and answered. Whether that answer means "on disk" is Redis's
    configuration:

    * ``appendonly yes`` with ``appendfsync always``: Redis fsyncs the AOF
      before it answers, so an acknowledged message survives Redis being
      killed (SIGKILL), crashing, or the machine losing power.
    * ``appendfsync everysec`` (Redis's default with AOF): a crash or power
      loss may lose the last second or so of acknowledged messages; a plain
      process kill loses nothing the OS had already been handed.
    * No AOF (RDB snapshots only, or none): everything since the last snapshot
      is lost on a crash.
    * ``replicas=n``: after the write, ``WAIT n`` checks that ``n`` replicas
      have it, within ``replica_timeout`` seconds, so it survives losing the
      primary (failover to one of them). If fewer confirm in time,
      :meth:`append` raises :class:`~securemcp.Unavailable`: the message was
      not acknowledged, though the primary (and some replicas) may keep it.

    An unreachable Redis makes every method raise
    :class:`~securemcp.Unavailable` (-31503) within ``timeout`` seconds. An
    append that fails so was not acknowledged, but may still have been stored.
    """

    what = "message store"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        prefix: str = "securemcp",
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> None:
        super().__init__(url, timeout=timeout, prefix=prefix)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be a non-negative integer, not {replicas!r}")
        # WAIT takes whole milliseconds and reads 0 as "forever"; it must also
        # answer before the call's own bound gives up on the whole append.
        if not (0.001 <= replica_timeout < self.timeout):
            raise ValueError(
                f"replica_timeout must be at least 0.001 s and below timeout "
                f"({self.timeout} s), not {replica_timeout!r}"
            )
        self.replicas = replicas
        self.replica_timeout = float(replica_timeout)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        return self

    def _key(self, *parts: str) -> str:
        return self.key("messages", *parts)

    async def append(self, room: str, username: str, message: str) -> StoredMessage:
        """Store a message; Redis has it (and ``replicas`` replicas) when this returns."""
        timestamp = utc_timestamp()
        keys = [
            self._key("next-id"),
            self._key("history", room),
            self._key("total"),
            self._key("rooms"),
            self._key("users"),
            self._key("authors", room),
        ]
        args = [room, username, message, timestamp]

        async def run() -> Any:
            client = self.client
            if self.replicas == 0:
                return await _APPEND(keys, args, client=client)
            # WAIT must go out on the connection that wrote, which is what
            # ensure_replication arranges (a separate client.wait() might not).
            timeout_ms = max(1, round(self.replica_timeout * 1000))
            try:
                with client.ensure_replication(self.replicas, timeout_ms):
                    return await _APPEND(keys, args, client=client)
            except coredis.exceptions.ReplicationError as exc:
                raise Unavailable(
                    f"Message store: fewer than {self.replicas} replica(s) confirmed "
                    f"the message within {self.replica_timeout} s"
                ) from exc

        message_id = await self.call(run)
        return StoredMessage(int(message_id), room, username, message, timestamp)

    async def list(self, room: str, *, before: int | None = None, limit: int = 10) -> _Messages:
        """The latest ``limit`` messages of ``room`` with an id below ``before``, oldest first."""
        _check_limit(limit)
        end = "+"
        if before is not None:
            if before <= 1:
                return []
            # An id given without its sequence part ends at that id's last
            # entry: ``before - 1`` is the inclusive form of "below before".
            if before - 1 < _MAX_STREAM_MS:
                end = str(before - 1)
        history = self._key("history", room)
        entries = await self.call(lambda: self.client.xrevrange(history, end, "-", count=limit))
        found = [
            StoredMessage(
                int(_text(entry.identifier).partition("-")[0]),
                room,
                _text(entry.field_values[b"u"]),
                _text(entry.field_values[b"m"]),
                _text(entry.field_values[b"t"]),
            )
            for entry in entries
        ]
        found.reverse()
        return found

    async def count(self, room: str | None = None) -> int:
        """Messages in ``room``, or in every room."""
        if room is None:
            total = self._key("total")
            value = await self.call(lambda: self.client.get(total))
        else:
            rooms = self._key("rooms")
            value = await self.call(lambda: self.client.hget(rooms, room))
        return 0 if value is None else int(value)

    async def users(self) -> _Names:
        """Everyone who has a message stored, sorted."""
        users = self._key("users")
        names = await self.call(lambda: self.client.hkeys(users))
        # Code point order is UTF-8 byte order: the same order as SQLite's.
        return sorted(_text(name) for name in names)

    async def rooms(self) -> dict[str, int]:
        """Every room that has messages, with its message count, sorted by name."""
        rooms = self._key("rooms")
        counts = await self.call(lambda: self.client.hgetall(rooms))
        decoded = {_text(room): int(count) for room, count in counts.items()}
        return {room: decoded[room] for room in sorted(decoded)}

    async def clear(self, room: str | None = None) -> int:
        """Delete the messages of ``room`` (or all); how many were deleted.

        The id counter stays: ids handed out later are still larger.
        """
        deleted: Any
        if room is None:
            keys = [self._key("total"), self._key("rooms"), self._key("users")]
            args = [self._key("history", ""), self._key("authors", "")]
            deleted = await self.call(lambda: _CLEAR_ALL(keys, args, client=self.client))
        else:
            keys = [
                self._key("history", room),
                self._key("authors", room),
                self._key("total"),
                self._key("rooms"),
                self._key("users"),
            ]
            deleted = await self.call(lambda: _CLEAR_ROOM(keys, [room], client=self.client))
        return int(deleted)

    async def aclose(self) -> None:
        """Nothing to release: the client closes when the last ``async with`` leaves."""


def _text(value: str | bytes) -> str:
    """A reply as text: the client answers in bytes, and everything stored was UTF-8."""
    return value.decode() if isinstance(value, bytes) else value
