"""Rate limits and connection caps, without I/O: the clock is passed in.

:class:`RateLimiter` answers "may this key call this tool now?" with a token
bucket per key (and optionally per key and tool); a refusal comes with the
seconds to wait, the ``data.retry_after`` of a -31029 answer.
:class:`ConnectionCounter` caps simultaneous connections per key (a principal's
subject, a client address).

Keys are any hashable value. Namespace them so that different kinds cannot
collide, e.g. ``("principal", principal.subject)`` for authenticated
connections and ``("connection", n)`` for anonymous ones: a subject chosen by a
token issuer must not be able to share, or exhaust, an anonymous
connection's bucket.

``now`` is any monotonic clock in seconds (``time.monotonic()``), the same one
for every call; it need not be POSIX time.

:class:`AsyncRateLimiter` is what a limiter that must ask someone else (a
shared store: ``securemcp.redis.RedisRateLimiter``) offers instead of
``check``; a server takes either kind as ``SecurityPolicy.rate_limiter``.
:class:`AsyncConnectionCounter` is the same for connection caps
(``securemcp.redis.RedisConnectionCounter``), which a server takes in place of
the number in ``SecurityPolicy.max_connections_per_address`` (or
``..._per_principal``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Protocol, runtime_checkable

__all__ = [
    "AsyncConnectionCounter",
    "AsyncRateLimiter",
    "ConnectionCounter",
    "RateLimiter",
    "TokenBucket",
]

# Float rounding could leave a bucket a hair short of a token at exactly the
# instant retry_after named; this tolerance (a billionth of a token per take)
# lets such a retry through.
_EPSILON = 1e-9


def _check_rate(rate: float, burst: float, what: str) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{what} rate must be a finite number of tokens per second > 0")
    if not (math.isfinite(burst) and burst >= 1):
        raise ValueError(f"{what} burst must be a finite number >= 1")


def _check_now(now: float) -> None:
    # A NaN would freeze the bucket forever (every comparison false).
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, not {now!r}")


class TokenBucket:
    """A bucket of ``burst`` tokens refilled at ``rate`` tokens per second; starts full.

    Over any interval of ``t`` seconds it allows at most ``burst + rate * t``
    tokens. Time going backwards counts as no time passing (the bucket keeps
    the latest ``now`` it saw, so a clock that jumps back and forth cannot mint
    tokens); a huge gap just fills the bucket.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        _check_rate(rate, burst, "TokenBucket")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        _check_now(now)
        if self._last is None:
            self._last = now
        elif now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0.0: now), consuming nothing."""
        if not (0 < cost <= self.burst):
            raise ValueError(f"cost must be > 0 and <= burst ({self.burst}), not {cost!r}")
        self._refill(now)
        # `now - last` is only as exact as the clock's float allows: at large
        # clock values a retry exactly `wait` later can come up a few ulps short.
        slack = _EPSILON + min(4 * self.rate * math.ulp(now), 1e-6)
        if self._tokens + slack >= cost:
            return 0.0
        return (cost - self._tokens) / self.rate

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens at ``now``: 0.0 if allowed, else the seconds to wait.

        A refusal consumes nothing, so a client retrying after the returned
        delay is allowed.
        """
        wait = self.retry_after(now, cost)
        if wait == 0.0:
            self._consume(cost)
        return wait

    def _consume(self, cost: float) -> None:
        self._tokens = max(0.0, self._tokens - cost)

    def is_full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (dropping it then loses nothing)."""
        _check_now(now)
        if self._last is None:
            return True
        elapsed = max(0.0, now - self._last)
        return self._tokens + elapsed * self.rate >= self.burst


_Key = tuple[Hashable, str | None]


class RateLimiter:
    """Token buckets per key, and per key and tool for the tools in ``per_tool``.

    ``rate`` (calls per second) and ``burst`` bound every key's calls over all
    tools; ``per_tool`` maps a tool name to its own ``(rate, burst)``, an extra
    bound for that tool per key. A call is allowed only when every bucket it
    touches allows it, and then it takes a token from each; a refused call
    takes nothing.

    Memory is bounded by ``max_keys`` buckets: past it the least recently used
    bucket is evicted, and on each check the oldest buckets are dropped if
    they have refilled completely. Both are safe: a key that comes back gets a
    new, full bucket, which is exactly what a full bucket would have allowed;
    for one evicted before it refilled, that is at most one burst of extra
    allowance, and only for a key idle longer than ``max_keys`` other buckets'
    latest use.
    """

    # How many of the oldest buckets each check looks at for dropping; two keep
    # pace with the at most two buckets a check can create.
    _SWEEP = 2

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        per_tool: Mapping[str, tuple[float, float]] | None = None,
        max_keys: int = 100_000,
    ) -> None:
        _check_rate(rate, burst, "RateLimiter")
        self.rate = float(rate)
        self.burst = float(burst)
        self.per_tool: dict[str, tuple[float, float]] = {}
        for tool, (tool_rate, tool_burst) in (per_tool or {}).items():
            _check_rate(tool_rate, tool_burst, f"per_tool[{tool!r}]")
            self.per_tool[tool] = (float(tool_rate), float(tool_burst))
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError("max_keys must be a positive integer")
        self.max_keys = max_keys
        self._buckets: OrderedDict[_Key, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        """How many buckets are held now."""
        return len(self._buckets)

    def check(self, key: Hashable, tool: str | None, now: float) -> float:
        """Count one call of ``tool`` (``None``: no tool) by ``key`` at ``now``.

        Returns 0.0 when allowed (the call is counted), else the seconds until
        it would be allowed (nothing is counted), rounded up to the next
        millisecond: send -31029 with ``data.retry_after`` set to that. A
        retry after that long is allowed, unless other calls took the tokens.
        """
        _check_now(now)
        self._sweep(now)
        buckets = [self._bucket((key, None), self.rate, self.burst)]
        if tool is not None and tool in self.per_tool:
            buckets.append(self._bucket((key, tool), *self.per_tool[tool]))
        wait = max(bucket.retry_after(now) for bucket in buckets)
        if wait == 0.0:
            for bucket in buckets:
                bucket._consume(1.0)
            return 0.0
        # Whole milliseconds read well on the wire, and rounding up means that
        # float noise in `now + wait` cannot make the retry a hair too early.
        return math.ceil(wait * 1000) / 1000

    def forget(self, key: Hashable) -> None:
        """Drop every bucket of ``key`` (say, an anonymous connection's, once it closed)."""
        self._buckets.pop((key, None), None)
        for tool in self.per_tool:
            self._buckets.pop((key, tool), None)

    def _bucket(self, bucket_key: _Key, rate: float, burst: float) -> TokenBucket:
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            bucket = self._buckets[bucket_key] = TokenBucket(rate, burst)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(bucket_key)
        return bucket

    def _sweep(self, now: float) -> None:
        for _ in range(self._SWEEP):
            oldest = next(iter(self._buckets.items()), None)
            if oldest is None or not oldest[1].is_full(now):
                return
            del self._buckets[oldest[0]]


@runtime_checkable
class AsyncRateLimiter(Protocol):
    """A rate limiter whose decision is awaited: :meth:`RateLimiter.check`, asynchronously.

    A server with one runs every tool call in a task of its own (none inline),
    which awaits :meth:`acheck` before the tool runs. The limiter reads its
    own clock.
    """

    async def acheck(self, key: Hashable, tool: str | None) -> float:
        """Count one call of ``tool`` by ``key``: 0.0 when allowed, else the seconds to wait.

        The same contract as :meth:`RateLimiter.check`: a refused call takes
        nothing, the wait is rounded up to the millisecond. It must answer in
        a bounded time, whatever happens to what it depends on.
        """
        ...

    def forget(self, key: Hashable) -> None:
        """Drop what is held for ``key`` (an anonymous connection's, once it closed)."""
        ...


class ConnectionCounter:
    """Counts open connections per key and refuses more than ``max_per_key``.

    Call :meth:`acquire` when a connection is accepted (refuse it with HTTP
    429 or 503 when it returns False) and :meth:`release` exactly once when an
    acquired connection ends. Keys at zero are forgotten, so memory follows
    the open connections.
    """

    def __init__(self, max_per_key: int) -> None:
        if isinstance(max_per_key, bool) or not isinstance(max_per_key, int) or max_per_key < 1:
            raise ValueError("max_per_key must be a positive integer")
        self.max_per_key = max_per_key
        self._counts: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> bool:
        """Count a new connection for ``key``; False (nothing counted) when at the cap."""
        count = self._counts.get(key, 0)
        if count >= self.max_per_key:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: Hashable) -> None:
        """Uncount a connection of ``key``; a release with nothing acquired is ignored."""
        count = self._counts.get(key, 0)
        if count <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] = count - 1

    def count(self, key: Hashable) -> int:
        """How many connections ``key`` holds now."""
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        """How many keys hold at least one connection."""
        return len(self._counts)


@runtime_checkable
class AsyncConnectionCounter(Protocol):
    """A connection cap whose decisions are awaited: :class:`ConnectionCounter`, asynchronously.

    A server with one decides each handshake in a task: the upgrade waits for
    :meth:`acquire`, and the slot is given back by :meth:`release` in a task
    when the connection ends. Both must answer in a bounded time, whatever
    happens to what the counter depends on.
    """

    max_per_key: int
    """Connections one key may hold at once."""

    async def acquire(self, key: Hashable) -> bool:
        """Count a new connection for ``key``; False (nothing counted) when at the cap."""
        ...

    async def release(self, key: Hashable) -> None:
        """Uncount a connection of ``key``; a release with nothing acquired is ignored."""
        ...

    def held(self, key: Hashable) -> int:
        """How many connections of ``key`` this process holds now (no I/O)."""
        ...
