"""Connection caps shared by every process and machine: open connections counted in Redis.

:class:`RedisConnectionCounter` is :class:`~securemcp.ratelimit.ConnectionCounter`
with the counts in Redis, so that a client address (or a principal) gets its
cap once across every server process, not once per process. Each decision is
one Lua script, atomic in Redis.

A process that crashes cannot give its slots back, so counts are kept per
process and count only while their process lives. Key layout, under the
prefix's hash tag (one cluster slot)::

    {prefix}:conns:<part>:<part>...   a hash per key: field = process id, value = its count
    {prefix}:procs                    a sorted set: process id -> when it is presumed dead

Key parts are percent-encoded (no ``:`` inside), so no address or subject can
name another's key. Every process refreshes its entry in ``procs`` (``ttl``
ahead, on Redis's clock) and the expiry of the hashes it holds every ``ttl / 3``
seconds; the acquire script adds up only the fields of processes still alive,
deletes the others', and counts a new connection only under the cap. A crashed
process's slots therefore come back ``ttl`` seconds after its last heartbeat,
and a hash whose holders are all gone expires by itself, as does ``procs``.

Counts change by increments (``HINCRBY``), exact in whatever order a process's
operations reach Redis. Where they may be wrong, the heartbeat writes what this
process holds instead: for a key whose operation failed or was cut short (it
may or may not have run), and for every key once this process finds it was
taken for dead (its entry in ``procs`` gone or past: a stall longer than
``ttl``, an outage, a Redis that lost its data), since others may have swept
its fields. Counts thus heal by themselves; a handshake racing with such a
repair on the same key may be miscounted by one until the next heartbeat.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import socket
from collections.abc import Hashable
from urllib.parse import quote

import anyio
import anyio.abc
from coredis.commands.script import Script

from securemcp.errors import Unavailable

from ._client import FallbackResource

__all__ = ["RedisConnectionCounter"]

# Redis's clock in milliseconds, for every script.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Sum of the live processes' counts in KEYS[1] (procs: KEYS[2]; ours: ARGV[1]).
_LIVE = """
local function live(sweep)
  local fields = redis.call('HGETALL', KEYS[1])
  local total = 0
  for i = 1, #fields, 2 do
    local owner, n = fields[i], tonumber(fields[i + 1])
    local alive = owner == ARGV[1]
    if not alive then
      local until_ = tonumber(redis.call('ZSCORE', KEYS[2], owner))
      alive = until_ ~= nil and until_ > now
    end
    if alive then
      total = total + n
    elseif sweep then
      redis.call('HDEL', KEYS[1], owner)
    end
  end
  return total
end
"""

# Whether we were taken for dead (our entry in KEYS[2] gone or past): others
# may have swept our fields. Then refresh it.
_REVIVE = """
local function revive(procs, ttl)
  local mine = tonumber(redis.call('ZSCORE', procs, ARGV[1]))
  redis.call('ZADD', procs, now + ttl, ARGV[1])
  redis.call('PEXPIRE', procs, ttl)
  if mine == nil or mine <= now then
    return 2
  end
  return 0
end
"""

# KEYS: the key's hash, procs. ARGV: our id, the cap, the ttl (ms).
# Returns 1 when counted, 0 at the cap (nothing counted), plus 2 if we were taken for dead.
_ACQUIRE = (
    _NOW
    + _LIVE
    + _REVIVE
    + """
local ttl = tonumber(ARGV[3])
local revived = revive(KEYS[2], ttl)
if live(true) >= tonumber(ARGV[2]) then
  return revived
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ttl)
return revived + 1
"""
)

# KEYS: the key's hash. ARGV: our id. Never below zero.
_RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""

# KEYS: the key's hash, procs. ARGV: our id. The count of the live processes.
_COUNT = _NOW + _LIVE + "\nreturn live(false)\n"

# KEYS: procs, then hashes. ARGV: our id, the ttl (ms), how many of the hashes
# get our count asserted (the first ones), then those counts. The others only
# have their expiry pushed back. Returns 2 if we were taken for dead (or Redis
# lost its data): then every count must be asserted.
_HEARTBEAT = (
    _NOW
    + _REVIVE
    + """
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local revived = revive(KEYS[1], ttl)
local asserted = tonumber(ARGV[3])
for i = 2, #KEYS do
  if i - 1 <= asserted then
    local n = tonumber(ARGV[i + 2])
    if n > 0 then
      redis.call('HSET', KEYS[i], ARGV[1], n)
    else
      redis.call('HDEL', KEYS[i], ARGV[1])
    end
  end
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return revived
"""
)

_BATCH = 256
"""Hashes re-asserted per heartbeat script."""


class RedisConnectionCounter(FallbackResource):
    """Open connections per key, capped at ``max_per_key`` across every process sharing Redis.

    Give every process the same ``url``, ``prefix``, ``max_per_key`` and
    ``ttl``. Keys are strings or tuples of strings (the server's are
    ``("address", ip)`` and ``("principal", subject)``).

    ``ttl`` (seconds) is how long a process's slots outlive it when it dies
    without giving them back; its heartbeat runs every ``ttl / 3`` seconds.

    When Redis cannot be reached within ``timeout`` seconds, the decision is
    taken locally, over this process's own connections (what
    :class:`~securemcp.ratelimit.ConnectionCounter` does): the cap then holds
    per process, and no handshake is refused or delayed past ``timeout`` for
    the outage. The outage is logged once, and so is the return; meanwhile
    Redis is tried again at most once every ``retry_interval`` seconds (the
    heartbeat tries too), and once it is back the heartbeat puts this
    process's counts there, connections admitted during the outage included.

    Pass it as ``SecurityPolicy(max_connections_per_address=...)`` (or
    ``max_connections_per_principal``): the transport opens it while it serves.
    """

    what = "connection counter"
    outage = "connection caps hold per process"

    def __init__(
        self,
        url: str,
        max_per_key: int,
        *,
        ttl: float = 10.0,
        timeout: float = 0.5,
        prefix: str = "securemcp",
        cluster: bool = False,
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(
            url, timeout=timeout, prefix=prefix, cluster=cluster, retry_interval=retry_interval
        )
        if isinstance(max_per_key, bool) or not isinstance(max_per_key, int) or max_per_key < 1:
            raise ValueError("max_per_key must be a positive integer")
        if not (math.isfinite(ttl) and ttl >= 0.1):
            raise ValueError(f"ttl must be a finite number of seconds >= 0.1, not {ttl!r}")
        self.max_per_key = max_per_key
        self.ttl = float(ttl)
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """This counter's field in every hash (unique per counter object)."""
        self._procs = self.key("procs")
        # What this process holds, by Redis key: the truth the heartbeat re-asserts.
        self._held: dict[str, int] = {}
        # Keys with an operation on the wire: the heartbeat leaves them for its next round.
        self._busy: dict[str, int] = {}
        # Keys whose count in Redis may be wrong (an operation failed or was cut short).
        self._dirty: set[str] = set()
        self._acquire: Script[bytes] = Script(script=_ACQUIRE)
        self._release: Script[bytes] = Script(script=_RELEASE)
        self._count: Script[bytes] = Script(script=_COUNT)
        self._heartbeat: Script[bytes] = Script(script=_HEARTBEAT)

    def redis_key(self, key: Hashable) -> str:
        """The hash that counts ``key``'s connections."""
        parts = (key,) if isinstance(key, str) else key
        if not isinstance(parts, tuple) or not all(isinstance(part, str) for part in parts):
            raise TypeError(f"a RedisConnectionCounter key is a string or strings, not {key!r}")
        return self.key("conns", *(quote(part, safe="") for part in parts))

    def held(self, key: Hashable) -> int:
        """How many connections of ``key`` this process holds now."""
        return self._held.get(self.redis_key(key), 0)

    def _failed(self, name: str) -> None:
        self._dirty.add(name)
        self._back_off()

    async def acquire(self, key: Hashable) -> bool:
        """Count a new connection for ``key``; False (nothing counted) when at the cap."""
        name = self.redis_key(key)
        if self._shared():
            client = self.client
            args: list[str | bytes | int | float] = [
                self.process_id,
                self.max_per_key,
                round(self.ttl * 1000),
            ]
            self._busy[name] = self._busy.get(name, 0) + 1
            try:
                counted: object = await self.call(
                    lambda: self._acquire([name, self._procs], args, client=client)
                )
            except Unavailable:
                self._failed(name)  # the script may have run: the heartbeat corrects it
            except BaseException:
                self._dirty.add(name)
                raise
            else:
                if not isinstance(counted, int):  # pragma: no cover - the script returns one
                    raise TypeError(f"the acquire script answered {counted!r}")
                if counted & 2:
                    self._revived()
                if counted & 1:
                    self._held[name] = self._held.get(name, 0) + 1
                    return True
                return False
            finally:
                self._unbusy(name)
        # Redis is away: this process's own connections decide, and the
        # heartbeat tells Redis once it is back.
        count = self._held.get(name, 0)
        if count >= self.max_per_key:
            return False
        self._held[name] = count + 1
        self._dirty.add(name)
        return True

    async def release(self, key: Hashable) -> None:
        """Uncount a connection of ``key``; a release with nothing acquired is ignored."""
        name = self.redis_key(key)
        count = self._held.get(name, 0)
        if count <= 0:
            return
        if count == 1:
            del self._held[name]
        else:
            self._held[name] = count - 1
        if not self._shared():
            self._dirty.add(name)
            return
        client = self.client
        self._busy[name] = self._busy.get(name, 0) + 1
        try:
            await self.call(lambda: self._release([name], [self.process_id], client=client))
        except Unavailable:
            self._failed(name)
        except BaseException:
            self._dirty.add(name)
            raise
        finally:
            self._unbusy(name)

    async def count(self, key: Hashable) -> int:
        """How many connections ``key`` holds across the live processes (this one's during
        an outage)."""
        name = self.redis_key(key)
        if self._shared():
            client = self.client
            try:
                total: object = await self.call(
                    lambda: self._count([name, self._procs], [self.process_id], client=client)
                )
            except Unavailable:
                self._back_off()
            else:
                if not isinstance(total, int):  # pragma: no cover - the script returns an integer
                    raise TypeError(f"the count script answered {total!r}")
                return total
        return self._held.get(name, 0)

    def _unbusy(self, name: str) -> None:
        busy = self._busy[name] - 1
        if busy:
            self._busy[name] = busy
        else:
            del self._busy[name]

    # The heartbeat

    def _start(self, tasks: anyio.abc.TaskGroup) -> None:
        tasks.start_soon(self._beat_forever)

    async def _beat_forever(self) -> None:
        while True:
            await self.beat()
            await anyio.sleep(self.ttl / 3)

    def _revived(self) -> None:
        """Redis took this process for dead (or lost its data): assert every count."""
        self._dirty |= self._held.keys()

    async def beat(self) -> bool:
        """Say this process lives; whether Redis heard it.

        Runs every ``ttl / 3`` seconds by itself while the counter is open.
        What this process holds is written as such only where Redis may have
        it wrong (an operation failed or was cut short, or this process was
        taken for dead): otherwise the scripts' own increments are exact, and
        writing a count read before they ran could undo one.
        """
        for _ in range(2):
            revived = await self._beat()
            if revived is None:
                return False
            if not revived:
                return True
            self._revived()  # and again at once, asserting every count
        return True

    async def _beat(self) -> bool | None:
        # Dirty keys are taken now; put back if Redis does not hear this beat.
        busy = self._busy.keys()
        dirty = self._dirty - busy
        self._dirty -= dirty
        asserted = sorted(dirty)
        refreshed = sorted(self._held.keys() - busy - dirty)
        # Every count is read now, before any await.
        ttl_ms = round(self.ttl * 1000)
        calls: list[tuple[list[str | bytes], list[str | bytes | int | float]]] = []
        names = asserted + refreshed
        for start in range(0, max(len(names), 1), _BATCH):
            batch = names[start : start + _BATCH]
            counts = [self._held.get(name, 0) for name in batch if name in dirty]
            calls.append(([self._procs, *batch], [self.process_id, ttl_ms, len(counts), *counts]))
        client = self.client
        revived = False
        for keys, args in calls:
            try:
                answer = await self.call(
                    functools.partial(self._heartbeat, keys, args, client=client)
                )
            except Unavailable:
                self._dirty |= dirty
                self._back_off()
                return None
            revived = revived or answer == 2
        self._retry_at = -math.inf
        return revived
