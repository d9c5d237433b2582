"""What every Redis-backed part shares: one coredis client, opened for a server's lifetime.

coredis (built on anyio, so the same code runs on asyncio and trio) opens its
connection pool in an ``async with`` block. Each part here is such a block
itself: the transport enters the broker, the rate limiter and the app's
resources (``app.uses(store)``) while it serves, or a program does so with
``async with``. Entering twice is allowed (two servers on one transport); the
client closes when the last one leaves.

An operation on an unreachable Redis fails within ``timeout`` seconds with
:class:`~securemcp.Unavailable` (-31503), never hangs. The outage is logged
once when it starts and once when it ends, not per call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Self, TypeVar

import anyio
import coredis
import coredis.exceptions
import coredis.retry

from securemcp.errors import Unavailable

__all__ = ["RedisResource", "redis_errors"]

logger = logging.getLogger("securemcp.redis")

_T = TypeVar("_T")

redis_errors: tuple[type[BaseException], ...] = (
    coredis.exceptions.RedisError,
    OSError,
    TimeoutError,
)
"""What an unreachable, restarting or overloaded Redis raises through coredis."""


class RedisResource:
    """A coredis client to ``url``, open while the object is entered.

    ``timeout`` bounds every operation, connecting included (seconds).
    ``prefix`` starts every key and channel name, so several applications can
    share one Redis database.
    """

    what = "Redis"
    """How the log and the error name this part (``"message store"``, ...)."""
    during_outage = "calls that need it get -31503 until it is back"
    """What the outage means, for the log line that reports it."""

    def __init__(self, url: str, *, timeout: float = 2.0, prefix: str = "securemcp") -> None:
        if not (timeout > 0):
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("prefix must be a non-empty string without braces")
        self.url = url
        self.timeout = float(timeout)
        self.prefix = prefix
        self._client: coredis.Redis[bytes] | None = None
        self._entered = 0
        self._down = False

    def _new_client(self) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self.url,
            connect_timeout=self.timeout,
            stream_timeout=self.timeout,
            # Our own bound decides when to give up; coredis must not retry past it.
            retry_policy=coredis.retry.NoRetryPolicy(),
        )

    @property
    def client(self) -> coredis.Redis[bytes]:
        """The open client; ``RuntimeError`` outside ``async with`` (or the transport)."""
        if self._client is None:
            raise RuntimeError(
                f"{type(self).__name__} is not open: pass it to the transport "
                "(broker=, rate_limiter=, or app.uses(...)) or use 'async with'"
            )
        return self._client

    async def __aenter__(self) -> Self:
        if self._entered == 0:
            client = self._new_client()
            await client.__aenter__()
            self._client = client
        self._entered += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._entered -= 1
        if self._entered == 0 and self._client is not None:
            client, self._client = self._client, None
            # No shield here: coredis's pool holds a task group, whose scope
            # must be the innermost when it exits.
            await client.__aexit__(None, None, None)

    async def call(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``await operation()``, or :class:`~securemcp.Unavailable` within ``timeout``."""
        try:
            with anyio.fail_after(self.timeout):
                result = await operation()
        except redis_errors as exc:
            self.went_down(exc)
            raise Unavailable(f"{self.what.capitalize()} unavailable") from exc
        self.came_back()
        return result

    def went_down(self, exc: BaseException) -> None:
        """Log the start of an outage (once)."""
        if not self._down:
            self._down = True
            logger.warning(
                "%s at %s unavailable (%s): %s",
                self.what,
                _safe_url(self.url),
                type(exc).__name__,
                self.during_outage,
            )

    def came_back(self) -> None:
        """Log the end of an outage (once)."""
        if self._down:
            self._down = False
            logger.warning("%s at %s is back", self.what, _safe_url(self.url))

    def key(self, *parts: str) -> str:
        """``prefix:part:...``, with the prefix as a hash tag (one cluster slot per prefix)."""
        return ":".join(("{" + self.prefix + "}", *parts))


def _safe_url(url: str) -> str:
    """``url`` without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}://{user + '@' if user else ''}{host}"
