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
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
import coredis
import coredis.exceptions
import coredis.retry
from coredis.connection import TCPLocation

from securemcp.errors import Unavailable

__all__ = ["FallbackResource", "RedisClient", "RedisResource", "redis_errors"]

logger = logging.getLogger("securemcp.redis")

_T = TypeVar("_T")

redis_errors: tuple[type[Exception], ...] = (
    coredis.exceptions.RedisError,
    OSError,
    TimeoutError,
)
"""What an unreachable, restarting or overloaded Redis raises through coredis."""


RedisClient = coredis.Redis[bytes] | coredis.RedisCluster[bytes]
"""One Redis server (or a primary with replicas), or a Redis Cluster."""


class RedisResource:
    """A coredis client to ``url``, open while the object is entered.

    ``timeout`` bounds every operation, connecting included (seconds).
    ``prefix`` starts every key and channel name, so several applications can
    share one Redis database. ``cluster=True`` when ``url`` names a node of a
    Redis Cluster: the client then follows the cluster's slots.
    """

    what = "Redis"
    """How the log and the error name this part (``"message store"``, ...)."""
    outage = "calls that need it get -31503"
    """What an outage means for this part's users, for the log."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, prefix: str = "securemcp", cluster: bool = False
    ) -> None:
        if not (timeout > 0):
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("prefix must be a non-empty string without braces")
        self.url = url
        self.timeout = float(timeout)
        self.prefix = prefix
        self.cluster = cluster
        self._client: RedisClient | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._closing: anyio.Event | None = None
        self._entered = 0
        self._down = False
        self._stopping = False

    def _new_client(self) -> RedisClient:
        # Our own bound decides when to give up; coredis must not retry past it.
        options: dict[str, Any] = {
            "connect_timeout": self.timeout,
            "stream_timeout": self.timeout,
            "retry_policy": coredis.retry.NoRetryPolicy(),
        }
        if self.cluster:
            return _cluster_client(self.url, options)
        return coredis.Redis.from_url(self.url, **options)

    @property
    def client(self) -> RedisClient:
        """The open client; ``RuntimeError`` outside ``async with`` (or the transport)."""
        if self._client is None:
            raise RuntimeError(
                f"{type(self).__name__} is not open: pass it to the transport "
                "(broker=, rate_limiter=, or app.uses(...)) or use 'async with'"
            )
        return self._client

    async def __aenter__(self) -> Self:
        if self._entered == 0:
            tasks = anyio.create_task_group()
            await tasks.__aenter__()
            try:
                self._closing = anyio.Event()
                self._client = await tasks.start(self._hold, self._new_client())
                self._start(tasks)
            except BaseException:
                tasks.cancel_scope.cancel()
                await tasks.__aexit__(None, None, None)
                raise
            self._tasks = tasks
        self._entered += 1
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._entered -= 1
        if self._entered == 0 and self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            # Failures while the client closes under the background tasks are no outage.
            self._stopping = True
            self._stop()
            # Background tasks end by cancellation; the client's holder, shielded,
            # by this event, so coredis always closes its pool uncancelled.
            tasks.cancel_scope.cancel()
            if self._closing is not None:
                self._closing.set()
            try:
                await tasks.__aexit__(*exc_info)
            finally:
                self._client = None
                self._stopping = False

    async def _hold(
        self,
        client: RedisClient,
        *,
        task_status: anyio.abc.TaskStatus[RedisClient] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep ``client`` open until :meth:`__aexit__`, in a task of its own.

        coredis's pool holds a task group whose scopes must nest exactly, and
        its closing must not be cancelled halfway: a task that no cancellation
        reaches satisfies both.
        """
        assert self._closing is not None
        with anyio.CancelScope(shield=True):
            async with client:
                task_status.started(client)
                await self._closing.wait()

    def _start(self, tasks: anyio.abc.TaskGroup) -> None:
        """Start the part's background tasks (none here) once the client is open."""

    def _stop(self) -> None:
        """The part stops serving: its background tasks are about to be cancelled."""

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
        if not self._down and not self._stopping:
            self._down = True
            logger.warning(
                "%s at %s unavailable (%s): %s until it is back",
                self.what,
                _safe_url(self.url),
                _cause(exc),
                self.outage,
            )

    def came_back(self) -> None:
        """Log the end of an outage (once)."""
        if self._down:
            self._down = False
            logger.warning("%s at %s is back", self.what, _safe_url(self.url))

    def key(self, *parts: str) -> str:
        """``prefix:part:...``, with the prefix as a hash tag (one cluster slot per prefix)."""
        return ":".join(("{" + self.prefix + "}", *parts))


class FallbackResource(RedisResource):
    """A part that decides locally while Redis is out, asking it again at most
    once every ``retry_interval`` seconds (so calls do not each wait for it)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        prefix: str,
        cluster: bool,
        retry_interval: float,
    ) -> None:
        super().__init__(url, timeout=timeout, prefix=prefix, cluster=cluster)
        if not (retry_interval >= 0):
            raise ValueError(f"retry_interval must be >= 0 seconds, not {retry_interval!r}")
        self.retry_interval = float(retry_interval)
        self._retry_at = -math.inf

    def _shared(self) -> bool:
        """Whether to ask Redis now: it has not failed within the last ``retry_interval``."""
        return time.monotonic() >= self._retry_at

    def _back_off(self) -> None:
        """Redis just failed: decide locally until ``retry_interval`` has passed."""
        self._retry_at = time.monotonic() + self.retry_interval


def _cluster_client(url: str, options: dict[str, Any]) -> coredis.RedisCluster[bytes]:
    """A cluster client with ``url``'s node as its startup node.

    Built by hand: coredis 6.9's ``RedisCluster.from_url`` passes the node in
    a form its own pool deprecates (a DeprecationWarning on every client).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"a cluster URL is redis://host:port or rediss://host:port, not {url!r}")
    return coredis.RedisCluster(
        startup_nodes=[TCPLocation(parts.hostname, parts.port or 6379)],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss",
        **options,
    )


def _cause(exc: BaseException) -> str:
    """The name of the first leaf exception of ``exc`` (task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return type(exc).__name__


def _safe_url(url: str) -> str:
    """``url`` without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}://{user + '@' if user else ''}{host}"
