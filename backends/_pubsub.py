"""One connection's end of the broadcast: subscriber for the broker, session for its tools.

Delivery never waits: a notification's frame is appended to the connection's
output and a flush is scheduled. A connection whose unsent output would pass
``Limits.max_pending_output`` is closed with 1013 (Try Again Later, "too
slow") and unsubscribed, so one slow reader costs at most that bound (plus
the write already under way) and never delays the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.from_thread
import anyio.lowlevel

from securemcp.protocol import CloseCode, ConnectionState, ServerConnection
from securemcp.pubsub import Broker, Notification, check_topic

__all__ = ["ConnectionSession", "LoopThread"]

logger = logging.getLogger("securemcp")

_T = TypeVar("_T")

TOO_SLOW = "too slow: broadcast backlog over the limit"
"""The reason of the 1013 close sent to a subscriber that cannot keep up."""


@dataclass(frozen=True, slots=True)
class LoopThread:
    """An event loop's thread, for code in worker threads that must act on the loop."""

    thread: int
    """The loop thread's identity (``threading.get_ident()``)."""
    token: anyio.lowlevel.EventLoopToken

    @classmethod
    def current(cls) -> LoopThread:
        """The running loop (call it from a task on that loop)."""
        return cls(threading.get_ident(), anyio.lowlevel.current_token())

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the loop and return its result: from a worker thread only."""
        return anyio.from_thread.run_sync(fn, *args, token=self.token)

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the loop: at once on the loop's thread, else by a hop to it."""
        if threading.get_ident() == self.thread:
            return fn(*args)
        return self.run(fn, *args)


class ConnectionSession:
    """A connection's :class:`~securemcp.pubsub.Subscriber` and :class:`~securemcp.pubsub.Session`.

    ``wake`` makes the connection write its output soon; ``handle_events``
    lets it act on what the core reported (after a close); ``pending`` tells
    how many bytes the peer has yet to receive. Worker threads hop back to
    ``loop``.
    """

    __slots__ = (
        "_handle_events",
        "_loop",
        "_peer",
        "_pending",
        "_topics",
        "_wake",
        "broker",
        "conn",
        "dropped",
    )

    def __init__(
        self,
        conn: ServerConnection,
        broker: Broker,
        *,
        wake: Callable[[], None],
        handle_events: Callable[[], None],
        pending: Callable[[], int],
        loop: LoopThread,
        peer: str = "?",
    ) -> None:
        self.conn = conn
        self.broker = broker
        self._wake = wake
        self._handle_events = handle_events
        self._pending = pending
        self._peer = peer
        # Created by the first subscription: most connections never make one.
        self._topics: set[str] | None = None
        self._loop = loop
        self.dropped = False
        """Whether the connection was closed for falling behind (1013)."""

    # Subscriber

    def deliver(self, notification: Notification) -> bool:
        """Queue ``notification``'s frame; close with 1013 instead of buffering past the bound."""
        conn = self.conn
        if conn.state is not ConnectionState.OPEN:
            return False
        mcp = conn.mcp is not None
        if conn.compressed:
            # Each compressed connection encodes its own frame (deflate state differs).
            size = len(notification.frame(jsonrpc_2=mcp))
            if not self._room_for(size):
                return False
            conn.notify(notification.method, notification.params)
        else:
            frame = notification.frame(jsonrpc_2=mcp)
            if not self._room_for(len(frame)):
                return False
            conn.send_frame(frame)
        self._wake()
        return True

    def _room_for(self, size: int) -> bool:
        conn = self.conn
        pending = self._pending()
        # A frame larger than the bound still goes to a client that keeps up.
        if pending == 0 or pending + size <= conn.limits.max_pending_output:
            return True
        logger.info("closing the connection from %s with 1013: %s", self._peer, TOO_SLOW)
        self.dropped = True
        self.close()
        conn.close(CloseCode.TRY_AGAIN_LATER, TOO_SLOW)
        self._handle_events()
        self._wake()
        return False

    # Session (for tools; any thread)

    def _on_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        return self._loop.call(fn, *args)

    def subscribe(self, topic: str) -> None:
        """Subscribe this connection to ``topic``."""
        check_topic(topic)
        self._on_loop(self._subscribe, topic)

    def _subscribe(self, topic: str) -> None:
        if self.conn.state is not ConnectionState.OPEN:
            return  # Closing: a subscription now would outlive unsubscribe_all.
        self.broker.subscribe(topic, self)
        if self._topics is None:
            self._topics = set()
        self._topics.add(topic)

    def unsubscribe(self, topic: str) -> bool:
        """Unsubscribe this connection from ``topic``; whether it was subscribed."""
        return self._on_loop(self._unsubscribe, topic)

    def _unsubscribe(self, topic: str) -> bool:
        if self._topics is not None:
            self._topics.discard(topic)
        return self.broker.unsubscribe(topic, self)

    async def live(self) -> bool:
        """Wait until the broker's subscriptions are live across processes (from the loop)."""
        live = getattr(self.broker, "live", None)
        # The in-process broker has no such wait: its subscriptions are live at once.
        return True if live is None else bool(await live())

    def publish(self, topic: str, method: str, params: Any = None) -> int:
        """Publish ``method(params)`` to ``topic``; how many connections got it."""
        return self._on_loop(self.broker.publish, topic, method, params)

    def subscriber_count(self, topic: str) -> int:
        """How many connections are subscribed to ``topic``."""
        return self._on_loop(self.broker.subscriber_count, topic)

    def topics(self) -> list[str]:
        """The topics that have at least one subscriber."""
        return self._on_loop(self.broker.topics)

    @property
    def subscriptions(self) -> frozenset[str]:
        """The topics this connection is subscribed to."""
        return self._on_loop(frozenset, self._topics or ())

    def close(self) -> None:
        """The connection is ending: leave every topic (on the loop's thread)."""
        self._topics = None
        self.broker.unsubscribe_all(self)
