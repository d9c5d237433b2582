"""Rooms, history, broadcast, rate limits and connection caps shared by every process via Redis.

Needs the ``redis`` extra (``pip install 'securemcp[redis]'``, which pulls
coredis). See ``docs/deployment.md`` for what each part guarantees.
"""

from __future__ import annotations

try:
    import coredis  # noqa: F401 - only to say which extra is missing
except ImportError as exc:  # pragma: no cover - the test environment has the extra
    raise ImportError(
        "securemcp.redis needs coredis: install the extra with pip install 'securemcp[redis]'"
    ) from exc

from ._broker import RedisBroker
from ._caps import RedisConnectionCounter
from ._client import RedisResource
from ._ratelimit import RedisRateLimiter
from ._store import RedisMessageStore

__all__ = [
    "RedisBroker",
    "RedisConnectionCounter",
    "RedisMessageStore",
    "RedisRateLimiter",
    "RedisResource",
]
