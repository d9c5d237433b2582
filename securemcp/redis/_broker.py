"""Broadcast across processes and machines: Redis pub/sub behind the ``Broker`` API.

Each process keeps its own subscribers in a :class:`~securemcp.pubsub.LocalBroker`
and holds **one** Redis subscriber connection, subscribed to a topic's channel
while at least one local connection follows the topic. A publication is
delivered to the local subscribers at once (encode once, write many, the 1013
bound for slow receivers, as in one process) and PUBLISHed for the other
processes, which skip nothing but their own publications.

Delivery across processes is at most once: Redis pub/sub keeps nothing, so
what is published while a process is cut off from Redis does not reach that
process's subscribers (a chat client catches up from the history). A process
reconnects with backoff and resubscribes every topic its connections still
follow; no client has to reconnect.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import coredis.retry
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic_core import from_json, to_json

from securemcp.pubsub import LocalBroker, Subscriber, check_topic

from ._client import RedisResource, redis_errors

__all__ = ["RedisBroker"]

logger = logging.getLogger("securemcp.redis")

_BATCH = 256
"""Publications sent to Redis in one pipeline, at most."""


class RedisBroker(RedisResource):
    """A :class:`~securemcp.pubsub.Broker` that spans every process using the same Redis.

    On a Redis Cluster (``cluster=True``) it uses sharded pub/sub
    (``SPUBLISH``/``SSUBSCRIBE``): each topic's channel hashes to one shard.

    Pass it to the transport (``WebSocketTransport(app, broker=RedisBroker(url))``),
    which opens it while serving. ``publish`` returns the number of *local*
    deliveries; :meth:`subscriber_count` and :meth:`topics` count this
    process's connections. ``max_backlog`` bounds the publications waiting for
    Redis: past it (Redis unreachable for long) new ones reach only local
    subscribers, and the log says so once. ``reconnect_delay`` is the first and
    ``max_reconnect_delay`` the longest wait between attempts to resubscribe.
    """

    what = "broker"
    outage = "publications reach this process's subscribers only"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        prefix: str = "securemcp",
        cluster: bool = False,
        max_backlog: int = 10_000,
        reconnect_delay: float = 0.05,
        max_reconnect_delay: float = 2.0,
    ) -> None:
        super().__init__(url, timeout=timeout, prefix=prefix, cluster=cluster)
        if max_backlog < 1:
            raise ValueError("max_backlog must be at least 1")
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ValueError("need 0 < reconnect_delay <= max_reconnect_delay")
        self.max_backlog = max_backlog
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self._local = LocalBroker()
        # Our own publications come back from Redis: this tells them apart.
        # Drawn again when serving starts: workers forked from one broker differ.
        self._origin = secrets.token_hex(8)
        self._channel_prefix = f"{prefix}:topic:"
        self._wanted: set[str] = set()
        """Channels some local connection follows."""
        self._live: set[str] = set()
        """Channels the subscriber connection is subscribed to now."""
        # Events belong to an event loop: made when serving starts.
        self._changed: anyio.Event | None = None
        self._settled: anyio.Event | None = None
        self._outbox: MemoryObjectSendStream[tuple[str, bytes]] | None = None
        self._dropping = False

    # The Broker API (the event loop's thread)

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Add ``subscriber`` to ``topic``; the first local one subscribes this process."""
        check_topic(topic)
        self._local.subscribe(topic, subscriber)
        channel = self._channel_prefix + topic
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._wake_follower()

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> bool:
        """Remove ``subscriber`` from ``topic``; the last local one unsubscribes this process."""
        removed = self._local.unsubscribe(topic, subscriber)
        if removed and self._local.subscriber_count(topic) == 0:
            self._wanted.discard(self._channel_prefix + topic)
            self._wake_follower()
        return removed

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from every topic (its connection ended)."""
        for topic in self._local.subscriptions(subscriber):
            self.unsubscribe(topic, subscriber)

    def publish(self, topic: str, method: str, params: Any = None) -> int:
        """Deliver ``method(params)`` here at once and to every other process through Redis.

        Returns the local deliveries. Raises ``PydanticSerializationError``
        when ``params`` is not JSON, before anything is delivered.
        """
        check_topic(topic)
        payload = to_json({"o": self._origin, "m": method, "p": params})
        delivered = self._local.publish(topic, method, params)
        self._send(self._channel_prefix + topic, payload)
        return delivered

    def topics(self) -> list[str]:
        """The topics at least one connection of this process follows."""
        return self._local.topics()

    def subscriber_count(self, topic: str) -> int:
        """How many connections of this process follow ``topic``."""
        return self._local.subscriber_count(topic)

    async def live(self) -> bool:
        """Wait until every topic followed here receives what other processes publish.

        A connection that just subscribed may miss what is published elsewhere
        before this returns True. ``False`` after the broker's ``timeout``,
        when Redis cannot be reached.
        """
        with anyio.move_on_after(self.timeout):
            while not self._wanted <= self._live:
                if self._settled is None:
                    raise RuntimeError("the broker is not serving: no Redis subscription")
                await self._settled.wait()
            return True
        return False

    def _wake_follower(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _send(self, channel: str, payload: bytes) -> None:
        if self._outbox is None:
            return  # Not serving: only this process's subscribers exist.
        try:
            self._outbox.send_nowait((channel, payload))
        except anyio.WouldBlock:
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "broker backlog full (%d publications waiting for Redis): "
                    "new ones reach this process's subscribers only",
                    self.max_backlog,
                )
        else:
            self._dropping = False

    # Serving

    def _start(self, tasks: anyio.abc.TaskGroup) -> None:
        self._origin = secrets.token_hex(8)
        send, receive = anyio.create_memory_object_stream[tuple[str, bytes]](self.max_backlog)
        self._outbox = send
        self._changed = anyio.Event()
        self._settled = anyio.Event()
        tasks.start_soon(self._publish_loop, receive)
        tasks.start_soon(self._subscribe_loop)

    def _stop(self) -> None:
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.close()
        self._live.clear()

    async def _publish_loop(self, receive: MemoryObjectReceiveStream[tuple[str, bytes]]) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < _BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._publish_batch(batch)

    async def _publish_batch(self, batch: list[tuple[str, bytes]]) -> None:
        # Once more on failure: after Redis restarted, the pool's first
        # connection is a dead one, and a publication that failed on it never
        # reached Redis. Past that, at most once: the batch is lost for the
        # other processes.
        failure: BaseException | None = None
        for _attempt in range(2):
            failure = None
            try:
                with anyio.fail_after(self.timeout):
                    await self._publish(batch)
            except* redis_errors as failures:
                failure = failures
            if failure is None:
                self.came_back()
                return
        assert failure is not None
        self.went_down(failure)

    async def _publish(self, batch: list[tuple[str, bytes]]) -> None:
        client = self.client
        if isinstance(client, coredis.RedisCluster):
            # Sharded: each topic's channel lives on one shard, and a
            # publication crosses only that shard (a plain PUBLISH would be
            # copied to every node of the cluster).
            for channel, payload in batch:
                await client.spublish(channel, payload)
            return
        async with client.pipeline(transaction=False) as pipe:
            for channel, payload in batch:
                pipe.publish(channel, payload)

    async def _subscribe_loop(self) -> None:
        delay = self.reconnect_delay
        while True:
            # Only Redis failing is retried: a bug, or a cancellation beside a
            # Redis error in a task group, goes through.
            try:
                await self._subscribe_once()
            except* redis_errors as failures:
                self.went_down(failures)
            self._live.clear()
            await anyio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _subscribe_once(self) -> None:
        client = self.client
        # One connection subscribes for the whole process (one per shard on a cluster).
        pubsub: coredis.patterns.pubsub.BasePubSub[bytes, Any] = (
            client.sharded_pubsub(
                ignore_subscribe_messages=True, retry_policy=coredis.retry.NoRetryPolicy()
            )
            if isinstance(client, coredis.RedisCluster)
            else client.pubsub(
                ignore_subscribe_messages=True, retry_policy=coredis.retry.NoRetryPolicy()
            )
        )
        async with pubsub, anyio.create_task_group() as tasks:
            tasks.start_soon(self._follow, pubsub)
            while True:
                batch = [await pubsub.get_message()]
                await _gather_more(pubsub, batch)
                # One loop pass for the whole batch: a connection's frames of
                # several publications then leave in one write.
                for message in batch:
                    if message is not None and message["type"] == "message":
                        self._deliver(message["channel"], message["data"])

    async def _follow(self, pubsub: coredis.patterns.pubsub.BasePubSub[bytes, Any]) -> None:
        """Keep the subscriber connection's channels equal to the wanted ones."""
        self._wake_follower()  # (Re)connected: every wanted channel needs subscribing.
        while True:
            assert self._changed is not None  # made before this task starts
            await self._changed.wait()
            self._changed = anyio.Event()
            with anyio.fail_after(self.timeout):
                new = self._wanted - self._live
                if new:
                    await pubsub.subscribe(*sorted(new))
                    self._live |= new
                gone = self._live - self._wanted
                if gone:
                    await pubsub.unsubscribe(*sorted(gone))
                    self._live -= gone
            self.came_back()
            settled, self._settled = self._settled, anyio.Event()
            if settled is not None:
                settled.set()

    def _deliver(self, channel: object, data: object) -> None:
        if not isinstance(channel, bytes) or not isinstance(data, bytes):
            return
        topic = channel.decode(errors="replace").removeprefix(self._channel_prefix)
        try:
            message = from_json(data)
            origin, method, params = message["o"], message["m"], message["p"]
        except (ValueError, TypeError, KeyError):
            logger.warning("dropped a malformed publication on Redis channel %r", channel)
            return
        if origin == self._origin or not isinstance(method, str) or not method:
            return
        self._local.publish(topic, method, params)


async def _gather_more(
    pubsub: coredis.patterns.pubsub.BasePubSub[bytes, Any], batch: list[Any]
) -> None:
    """Add to ``batch`` the publications Redis has already sent, up to :data:`_BATCH`.

    coredis hands over one message per event-loop pass (each receive from its
    stream is a checkpoint); a burst from Redis is read in one go, though, so
    yielding while more keep arriving collects it. Reads coredis's own message
    stream (coredis 6.x); without it, messages are taken one at a time.
    """
    stream = getattr(pubsub, "_receive_stream", None)
    receive = getattr(stream, "receive_nowait", None)
    if receive is None:  # pragma: no cover - a coredis without the stream
        return
    while len(batch) < _BATCH:
        await anyio.lowlevel.checkpoint()
        try:
            batch.append(receive())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return
        while len(batch) < _BATCH:
            try:
                batch.append(receive())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
