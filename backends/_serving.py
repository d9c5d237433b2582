"""One running server's shared state: its connections, caps, drain and keepalive ticker.

Both I/O paths register their connections here; the drivers read the
``draining`` flag and report finished calls; ``WebSocketTransport.serve`` runs
the keepalive ticker and, to stop, :meth:`_Server.drain`. The default
``max_connections`` comes from the file-descriptor limit (see
:func:`default_max_connections`).
"""

from __future__ import annotations

import asyncio
import math
import resource
from typing import Any

import anyio
import anyio.abc

from ._anyio_server import StreamConnection
from ._asyncio_server import ServerProtocol, WriteBatch
from ._pubsub import LoopThread
from ._settings import ServerSettings

__all__ = ["BACKLOG", "Connection", "default_max_connections", "raise_fd_limit"]

WORKER_THREADS = 40
"""Worker threads one server lends to sync tools at most (anyio's own default)."""

Connection = ServerProtocol | StreamConnection
"""A served connection, on either path: its ``driver`` holds its state."""

FD_RESERVE = 100
"""File descriptors the default ``max_connections`` leaves for everything else:
the listening sockets, log files, the SQLite store, worker threads' needs."""

BACKLOG = 4096
"""Connections the kernel may hold waiting for accept() (capped by somaxconn)."""


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit where allowed; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # not allowed here: keep the soft limit we have
    return soft


def default_max_connections() -> int:
    """The ``max_connections`` a transport gets by default: what the fd limit allows."""
    return max(1, raise_fd_limit() - FD_RESERVE)


class _Server:
    """The state of one running :meth:`WebSocketTransport.serve`, shared by its connections."""

    def __init__(self, settings: ServerSettings, max_connections: int, loop: LoopThread) -> None:
        self.settings = settings
        self.max_connections = max_connections
        self.backlog = BACKLOG
        limits = settings.limits
        assert limits is not None  # ServerSettings puts the default in
        self.write_high_water = limits.max_pending_output
        """Unsent bytes past which the asyncio path stops reading a connection."""
        self.loop = loop
        self.limiter = anyio.CapacityLimiter(WORKER_THREADS)
        self.connections: dict[Connection, bool] = {}
        """Every connection served, and whether it holds one of the max_connections slots."""
        self.admitted = 0
        self.draining = False
        self.accept_scope = anyio.CancelScope()
        self.grace_scope = anyio.CancelScope()
        self._changed = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        # The asyncio path's own: its loop, its write batch and its call tasks.
        self._asyncio_loop: asyncio.AbstractEventLoop | None = None
        self._batch: WriteBatch | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def use_asyncio(self) -> None:
        """Serve with asyncio protocols (see ``_asyncio_server.py``)."""
        loop = asyncio.get_running_loop()
        self._asyncio_loop = loop
        self._batch = WriteBatch(loop)

    @property
    def batch(self) -> WriteBatch:
        """The asyncio path's writes, gathered per loop pass."""
        assert self._batch is not None
        return self._batch

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """Where the anyio path runs connections, calls that suspend, timers and flushes."""
        assert self._task_group is not None
        return self._task_group

    def loop_time(self) -> float:
        """The asyncio loop's clock."""
        assert self._asyncio_loop is not None
        return self._asyncio_loop.time()

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a task until it ends (the asyncio path: calls and the drivers' own; shutdown
        waits for them)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add(self, connection: Connection, *, admitted: bool) -> None:
        """A connection starts; ``admitted`` if it takes a max_connections slot."""
        self.connections[connection] = admitted
        self.admitted += admitted

    def remove(self, connection: Connection) -> None:
        """A connection ended."""
        self.admitted -= self.connections.pop(connection, False)
        self._notify()

    def call_finished(self) -> None:
        """A call ended: a draining server may be waiting for the last one."""
        self._notify()

    def stop(self) -> None:
        """Stop accepting; asked again while draining, stop waiting for calls."""
        if self.accept_scope.cancel_called:
            self.grace_scope.cancel()
        self.accept_scope.cancel()

    def _notify(self) -> None:
        self._changed.set()

    async def _wait_until(self, done: Any) -> None:
        while not done():
            self._changed = anyio.Event()
            await self._changed.wait()

    async def keepalive_loop(self) -> None:
        """Tick every connection's keepalive a few times per interval (one task per server)."""
        interval = self.settings.ping_interval
        if interval is None:
            return
        timeout = self.settings.ping_timeout
        # Pings go out, and overdue pongs are noticed, within a quarter of the shorter period.
        tick = min(interval, interval if timeout is None else timeout) / 4
        while True:
            await anyio.sleep(tick)
            now = anyio.current_time()
            for connection in list(self.connections):
                connection.driver.keepalive_tick(now)

    async def drain(self, shutdown_grace: float | None) -> None:
        """Wait for the calls in flight, then close every connection with 1001."""
        self.draining = True
        self.grace_scope.deadline = (
            math.inf if shutdown_grace is None else anyio.current_time() + shutdown_grace
        )
        with self.grace_scope:
            await self._wait_until(
                lambda: not any(c.driver.calls_in_flight for c in self.connections)
            )
        for connection in list(self.connections):
            connection.driver.go_away()
        # Every connection ends by itself within close_timeout (its own deadline).
        await self._wait_until(lambda: not self.connections)
        while self._tasks:
            # Calls the connections cancelled as they closed: let them finish
            # unwinding; and the drivers' own tasks (slots given back to a
            # shared counter, which closes after this), which may start more.
            await asyncio.wait(list(self._tasks))
