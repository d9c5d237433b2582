"""The notifications a server pushes, queued for the client's consumer.

The queue is bounded and drops the *oldest* notification when full, so that a
chatty server can neither grow the client's memory nor stall the answers that
arrive behind its notifications.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, Self

from ._client_io import ClientIO, Signal

__all__ = ["Notification", "NotificationHandler", "NotificationIterator", "NotificationQueue"]

logger = logging.getLogger("securemcp.client")

NotificationHandler = Callable[[str, Any], Any]
"""``on_notification(method, params)``; it may return an awaitable, which is awaited."""


class Notification(NamedTuple):
    """A notification the server pushed: unpacks as ``(method, params)``."""

    method: str
    params: Any


class NotificationQueue:
    """At most ``size`` notifications, oldest first, until the connection is over."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._notes: deque[Notification] = deque(maxlen=size)
        self._ready = Signal()
        self._ended = False
        self.dropped = 0
        """How many notifications were dropped because the consumer lagged."""

    def put(self, note: Notification) -> None:
        """Queue ``note``; when full, the oldest one makes room (the deque drops it)."""
        if len(self._notes) == self._size:
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "notification consumer lags: dropping the oldest (max_queued_notifications=%d)",
                    self._size,
                )
        self._notes.append(note)
        self._ready.fire()

    def end(self) -> None:
        """Nothing more will come: consumers get what is queued, then the end."""
        self._ended = True
        self._ready.fire()

    async def get(self, io: ClientIO) -> Notification:
        """The oldest notification; :class:`StopAsyncIteration` once ended and drained."""
        while not self._notes:
            if self._ended:
                raise StopAsyncIteration
            await self._ready.wait(io)
        return self._notes.popleft()

    async def dispatch(self, io: ClientIO, handler: NotificationHandler) -> None:
        """Feed ``handler`` one notification at a time until the queue ends."""
        while True:
            try:
                method, params = await self.get(io)
            except StopAsyncIteration:
                return
            try:
                outcome = handler(method, params)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                # A handler's bug must not kill the connection.
                logger.exception("on_notification handler failed for %r", method)


class NotificationIterator:
    """Iterates notifications until the connection is over and the queue is drained."""

    def __init__(self, queue: NotificationQueue, io: ClientIO) -> None:
        self._queue = queue
        self._io = io

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Notification:
        return await self._queue.get(self._io)
