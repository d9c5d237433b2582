"""Broadcast: topics that connections subscribe to, and notifications published to them.

The library's broadcast interface has three parts:

- a :class:`Broker` routes a published notification to every subscriber of
  its topic. :class:`LocalBroker` is the in-process default; a multi-process
  deployment puts a real broker (Redis, NATS, ...) behind the same protocol,
  and the tools do not change.
- a :class:`Subscriber` is one connection's delivery end: its
  :meth:`~Subscriber.deliver` never blocks. The backend's subscriber queues
  the frame on its connection, and closes a connection whose unsent output is
  over its bound with 1013 (Try Again Later) rather than buffer more, so a
  slow client can neither hold up the others nor grow the server's memory.
- a :class:`Session` is what a tool sees through its
  :class:`~securemcp.Context`: ``ctx.subscribe(topic)``,
  ``ctx.publish(topic, method, params)``, usable from async tools and from
  sync tools in worker threads alike.

A :class:`Notification` is encoded at most once per dialect, however many
connections receive it (see :func:`securemcp.protocol.encode_notification`).

Nothing here performs I/O: the broker and the notification are plain objects
the backend calls on its event loop's thread.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .protocol.push import encode_notification

__all__ = ["Broker", "LocalBroker", "Notification", "Session", "Subscriber"]

MAX_TOPIC_LENGTH = 256
"""Longest topic name a :class:`LocalBroker` accepts, in characters."""


class Notification:
    """One published notification; its frames are encoded lazily, once per dialect."""

    __slots__ = ("_frames", "method", "params")

    def __init__(self, method: str, params: Any = None) -> None:
        if not isinstance(method, str) or not method:
            raise ValueError("a notification's method must be a non-empty string")
        self.method = method
        self.params = params
        self._frames: dict[bool, bytes] = {}

    def frame(self, *, jsonrpc_2: bool = False) -> bytes:
        """The WebSocket frame carrying this notification (cached after the first call).

        ``jsonrpc_2`` for connections speaking MCP. Raises
        ``pydantic_core.PydanticSerializationError`` if ``params`` is not JSON.
        """
        frame = self._frames.get(jsonrpc_2)
        if frame is None:
            frame = self._frames[jsonrpc_2] = encode_notification(
                self.method, self.params, jsonrpc_2=jsonrpc_2
            )
        return frame

    def __repr__(self) -> str:
        return f"Notification({self.method!r})"


@runtime_checkable
class Subscriber(Protocol):
    """The receiving end of a subscription: one connection, as its backend sees it."""

    def deliver(self, notification: Notification) -> bool:
        """Queue ``notification`` without blocking; ``False`` if it was not delivered.

        A subscriber that cannot keep up drops itself (closing its connection)
        instead of buffering without bound.
        """
        ...


@runtime_checkable
class Broker(Protocol):
    """Routes notifications published on a topic to the topic's subscribers."""

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Add ``subscriber`` to ``topic`` (again: no effect)."""
        ...

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> bool:
        """Remove ``subscriber`` from ``topic``; whether it was subscribed."""
        ...

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from every topic (its connection ended)."""
        ...

    def publish(self, topic: str, method: str, params: Any = None) -> int:
        """Send notification ``method(params)`` to ``topic``'s subscribers; how many got it.

        A broker spanning processes may deliver elsewhere after returning, and
        count only the local deliveries.
        """
        ...

    def topics(self) -> list[str]:
        """The topics that have at least one subscriber."""
        ...

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has (0 for an unknown topic)."""
        ...


def check_topic(topic: object) -> str:
    """``topic`` if it is a valid topic name (1 to 256 characters), else ``ValueError``."""
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH:
        raise ValueError(f"a topic must be a string of 1 to {MAX_TOPIC_LENGTH} characters")
    return topic


class LocalBroker:
    """The in-process :class:`Broker`: subscribers of one server, on one event loop.

    Not thread-safe by design: the backend calls it from its event loop's
    thread only (a sync tool's ``ctx.publish`` hops there first). Topics with no
    subscriber left are forgotten, so memory follows the subscriptions.
    """

    def __init__(self) -> None:
        # Dicts as ordered sets: delivery follows subscription order.
        self._subscribers: dict[str, dict[Subscriber, None]] = {}
        self._topics_of: dict[Subscriber, dict[str, None]] = {}

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Add ``subscriber`` to ``topic`` (again: no effect)."""
        check_topic(topic)
        self._subscribers.setdefault(topic, {})[subscriber] = None
        self._topics_of.setdefault(subscriber, {})[topic] = None

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> bool:
        """Remove ``subscriber`` from ``topic``; whether it was subscribed."""
        members = self._subscribers.get(topic)
        if members is None or subscriber not in members:
            return False
        del members[subscriber]
        if not members:
            del self._subscribers[topic]
        topics = self._topics_of[subscriber]
        del topics[topic]
        if not topics:
            del self._topics_of[subscriber]
        return True

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from every topic (its connection ended)."""
        for topic in list(self._topics_of.get(subscriber, ())):
            self.unsubscribe(topic, subscriber)

    def publish(self, topic: str, method: str, params: Any = None) -> int:
        """Deliver ``method(params)`` to every subscriber of ``topic``; how many took it."""
        members = self._subscribers.get(topic)
        if not members:
            return 0
        notification = Notification(method, params)
        # A snapshot: a subscriber that falls behind unsubscribes itself while we loop.
        return sum(subscriber.deliver(notification) for subscriber in list(members))

    def topics(self) -> list[str]:
        """The topics that have at least one subscriber, in order of first subscription."""
        return list(self._subscribers)

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has (0 for an unknown topic)."""
        return len(self._subscribers.get(topic, ()))

    def subscriptions(self, subscriber: Subscriber) -> list[str]:
        """The topics ``subscriber`` is subscribed to."""
        return list(self._topics_of.get(subscriber, ()))


class Session(Protocol):
    """A connection's broadcast session, as tools reach it through their Context.

    Every method is safe to call from the event loop and from a sync tool's
    worker thread.
    """

    def subscribe(self, topic: str) -> None:
        """Subscribe this connection to ``topic``."""
        ...

    def unsubscribe(self, topic: str) -> bool:
        """Unsubscribe this connection from ``topic``; whether it was subscribed."""
        ...

    async def live(self) -> bool:
        """Wait until this connection's subscriptions are live in every process (async tools)."""
        ...

    def publish(self, topic: str, method: str, params: Any = None) -> int:
        """Publish notification ``method(params)`` to ``topic``; how many connections got it."""
        ...

    def subscriber_count(self, topic: str) -> int:
        """How many connections are subscribed to ``topic``."""
        ...

    def topics(self) -> list[str]:
        """The topics that have at least one subscriber."""
        ...

    @property
    def subscriptions(self) -> frozenset[str]:
        """The topics this connection is subscribed to."""
        ...
