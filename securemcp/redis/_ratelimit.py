"""Rate limits shared by every process and machine: token buckets kept in Redis.

:class:`RedisRateLimiter` is :class:`~securemcp.ratelimit.RateLimiter` with the
buckets of principals in Redis, so that a principal's calls count against one
budget wherever they land. Each decision is one Lua script, atomic in Redis: it
reads Redis's clock (``TIME``: one clock for every process, whatever theirs
say), refills the buckets the call touches, and takes a token from all of them
or from none. A bucket expires once it would have refilled completely, so
Redis holds only the buckets of recently active principals.

Key layout, under the prefix's hash tag (one cluster slot)::

    {prefix}:ratelimit:<subject>             the principal's bucket, every tool
    {prefix}:ratelimit:<subject>:<tool>      its bucket for a tool in per_tool

``subject`` and ``tool`` are percent-encoded (no ``:`` inside), so no subject
can name another's bucket. Each bucket is a hash: ``t`` the tokens left, ``ts``
the Redis time of the last refill in microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from urllib.parse import quote

from coredis.commands.script import Script

from securemcp.errors import Unavailable
from securemcp.ratelimit import RateLimiter

from ._client import FallbackResource

__all__ = ["RedisRateLimiter"]

# KEYS: the buckets of one call. ARGV: each bucket's rate (tokens per second)
# and burst, in order. Returns 0 when allowed (a token taken from every
# bucket), else the milliseconds to wait, rounded up (nothing taken).
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tokens, last, wait = {}, {}, 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1]) / 1000000
  local burst = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 't', 'ts')
  local t, ts = tonumber(state[1]), tonumber(state[2])
  if t == nil or ts == nil then
    t, ts = burst, now
  elseif now > ts then
    t, ts = math.min(burst, t + (now - ts) * rate), now
  end
  tokens[i], last[i] = t, ts
  if t + 1e-9 < 1 then
    wait = math.max(wait, (1 - t) / rate)
  end
end
if wait > 0 then
  return math.ceil(wait / 1000)
end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1]) / 1000000
  local burst = tonumber(ARGV[2 * i])
  local t = math.max(0, tokens[i] - 1)
  redis.call('HSET', key, 't', string.format('%.17g', t), 'ts', string.format('%.0f', last[i]))
  redis.call('PEXPIRE', key, math.ceil((burst - t) / rate / 1000) + 1000)
end
return 0
"""


_SHARED = {"principal": "ratelimit", "address": "ratelimit-address"}
"""The kinds of key shared through Redis, and the namespace of each (so that no
principal's subject can name an address's bucket)."""


def _shared_name(key: Hashable) -> tuple[str, str] | None:
    """``(namespace, name)`` of a principal's or a client address's key (shared), else ``None``."""
    if isinstance(key, tuple) and len(key) == 2:
        kind, name = key
        namespace = _SHARED.get(kind) if isinstance(kind, str) else None
        if namespace is not None and isinstance(name, str):
            return namespace, quote(name, safe="")
    return None


class RedisRateLimiter(FallbackResource):
    """Token buckets per principal (and per principal and tool) shared through Redis.

    The same semantics as :class:`~securemcp.ratelimit.RateLimiter` (``rate``
    calls per second and ``burst`` over every tool, ``per_tool`` extra
    ``(rate, burst)`` bounds; a refused call takes nothing; the wait is rounded
    up to the millisecond), for every process that uses the same Redis and
    ``prefix``: give them all the same parameters.

    Principals' keys (``("principal", subject)``) and client addresses'
    (``("address", ip)``, anonymous HTTP requests') are shared. An anonymous
    connection's key (``("connection", id(...))``) names one connection of one
    process, so its buckets stay in this process, in a local
    :class:`~securemcp.ratelimit.RateLimiter` with the same parameters (as does
    any other kind of key).

    When Redis cannot be reached within ``timeout`` seconds, the decision is
    taken locally, by a per-process fallback ``RateLimiter`` of the same
    parameters: the limit then holds per process, not across them, and
    calls are never refused or delayed for the outage. The outage is logged
    once, and so is the return; meanwhile Redis is tried again at most once
    every ``retry_interval`` seconds, so that calls do not each wait for it.

    Pass it as ``SecurityPolicy(rate_limiter=...)``: the transport opens it
    while it serves.
    """

    what = "rate limiter"
    outage = "calls are rate limited per process"

    def __init__(
        self,
        url: str,
        rate: float,
        burst: float,
        *,
        per_tool: Mapping[str, tuple[float, float]] | None = None,
        timeout: float = 0.5,
        prefix: str = "securemcp",
        cluster: bool = False,
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(
            url, timeout=timeout, prefix=prefix, cluster=cluster, retry_interval=retry_interval
        )
        # Validates the parameters, and keeps anonymous connections' buckets.
        self.local = RateLimiter(rate, burst, per_tool=per_tool)
        self.rate = self.local.rate
        self.burst = self.local.burst
        self.per_tool = self.local.per_tool
        self._fallback: RateLimiter | None = None
        self._script: Script[bytes] = Script(script=_TAKE)

    @property
    def fallback(self) -> RateLimiter | None:
        """The per-process buckets of principals during an outage (``None``: none yet)."""
        return self._fallback

    async def acheck(self, key: Hashable, tool: str | None) -> float:
        """Count one call of ``tool`` by ``key`` now: 0.0 when allowed, else the seconds to wait."""
        shared = _shared_name(key)
        if shared is None:
            return self.local.check(key, tool, time.monotonic())
        if not self._shared():
            return self._decide_locally(key, tool)
        namespace, name = shared
        keys: list[str | bytes] = [self.key(namespace, name)]
        args: list[str | bytes | int | float] = [repr(self.rate), repr(self.burst)]
        if tool is not None and tool in self.per_tool:
            keys.append(self.key(namespace, name, quote(tool, safe="")))
            tool_rate, tool_burst = self.per_tool[tool]
            args += [repr(tool_rate), repr(tool_burst)]
        client = self.client
        try:
            wait: object = await self.call(lambda: self._script(keys, args, client=client))
        except Unavailable:
            self._back_off()
            return self._decide_locally(key, tool)
        # Back (or never gone): the shared buckets decide again; the stale
        # local ones must not count against the next outage.
        self._fallback = None
        if not isinstance(wait, int):  # pragma: no cover - the script returns an integer
            raise TypeError(f"the rate limit script answered {wait!r}")
        return wait / 1000

    def _decide_locally(self, key: Hashable, tool: str | None) -> float:
        if self._fallback is None:
            self._fallback = RateLimiter(self.rate, self.burst, per_tool=self.per_tool)
        return self._fallback.check(key, tool, time.monotonic())

    def forget(self, key: Hashable) -> None:
        """Drop the local buckets of ``key`` (an anonymous connection's, once it closed).

        Shared buckets are not dropped: they expire by themselves.
        """
        self.local.forget(key)
        if self._fallback is not None:
            self._fallback.forget(key)
