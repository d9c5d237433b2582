"""Every Redis part on a real three-primary Redis Cluster (``cluster=True``)."""

from __future__ import annotations

import pytest

from securemcp.redis import (
    RedisBroker,
    RedisConnectionCounter,
    RedisMessageStore,
    RedisRateLimiter,
)

from .redis_server import RedisCluster
from .test_redis_broker import Inbox, until


@pytest.mark.anyio
async def test_the_store_keeps_one_prefix_on_one_slot_and_works_across_rooms(
    redis_cluster: RedisCluster,
) -> None:
    async with RedisMessageStore(redis_cluster.url, cluster=True) as store:
        sent = [await store.append(f"room{n % 4}", f"user{n % 3}", f"m{n}") for n in range(20)]
        assert [m.id for m in sent] == list(range(1, 21))
        assert [m.message for m in await store.list("room1", limit=3)] == ["m9", "m13", "m17"]
        assert await store.rooms() == {"room0": 5, "room1": 5, "room2": 5, "room3": 5}
        assert await store.clear("room2") == 5
        assert await store.count() == 15
    # Every key of the store is on the one node that owns its hash tag.
    holders = [node for node in redis_cluster.nodes if node.command("DBSIZE") != "0"]
    assert len(holders) == 1


@pytest.mark.anyio
async def test_the_rate_limit_is_shared_on_a_cluster(redis_cluster: RedisCluster) -> None:
    async with (
        RedisRateLimiter(redis_cluster.url, 0.001, 3, cluster=True) as here,
        RedisRateLimiter(redis_cluster.url, 0.001, 3, cluster=True) as there,
    ):
        key = ("principal", "ann")
        decisions = [await (here if n % 2 else there).acheck(key, None) for n in range(4)]
        assert decisions[:3] == [0.0, 0.0, 0.0]
        assert decisions[3] > 0


@pytest.mark.anyio
async def test_on_a_cluster_publications_are_sharded_and_cross_processes(
    redis_cluster: RedisCluster,
) -> None:
    first = RedisBroker(redis_cluster.url, cluster=True)
    second = RedisBroker(redis_cluster.url, cluster=True)
    topics = [f"room:{n}" for n in range(12)]
    async with first, second:
        inboxes = {topic: Inbox() for topic in topics}
        for topic in topics:
            second.subscribe(topic, inboxes[topic])
        assert await second.live()
        for topic in topics:
            first.publish(topic, "m", topic)
        await until(
            lambda: all(inbox.params() == [t] for t, inbox in inboxes.items()),
            "every topic's publication arrived",
        )
        # Sharded channels only (SSUBSCRIBE), spread over more than one node.
        per_node = [node.command("PUBSUB", "SHARDCHANNELS").split() for node in redis_cluster.nodes]
        assert sorted(c for channels in per_node for c in channels) == sorted(
            f"securemcp:topic:{topic}" for topic in topics
        )
        assert sum(1 for channels in per_node if channels) >= 2
        assert all(node.command("PUBSUB", "CHANNELS") == "" for node in redis_cluster.nodes)


@pytest.mark.anyio
async def test_a_connection_cap_is_shared_on_a_cluster(redis_cluster: RedisCluster) -> None:
    async with (
        RedisConnectionCounter(redis_cluster.url, 2, cluster=True) as here,
        RedisConnectionCounter(redis_cluster.url, 2, cluster=True) as there,
    ):
        key = ("address", "203.0.113.7")
        assert await here.acquire(key)
        assert await there.acquire(key)
        assert not await here.acquire(key)
        await there.release(key)
        assert await here.acquire(key)
