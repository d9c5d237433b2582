"""RedisConnectionCounter against a real redis-server, alone: shared caps, crashes, outages.

Two counter objects on one Redis stand for two processes. A counter whose
``async with`` ends without giving its slots back is a crashed process: its
heartbeat stops. The counter behind servers, and the handshakes whose decision
is pending: ``test_redis_caps_servers.py``.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from typing import Any

import anyio
import anyio.abc
import pytest

from securemcp.redis import RedisConnectionCounter

from .redis_server import RedisServer

TIMEOUT = 10.0
"""Bound of each test's network activity; they finish far sooner."""

HERE = ("address", "127.0.0.1")
HASH = "{securemcp}:conns:address:127.0.0.1"


def counter(redis_server: RedisServer, cap: int = 3, **options: Any) -> RedisConnectionCounter:
    """A counter on ``redis_server``: one per "process"."""
    return RedisConnectionCounter(redis_server.url, cap, **options)


async def eventually(condition: Any, deadline: float = TIMEOUT) -> float:
    """Poll ``condition()`` (maybe async) until true; the seconds it took."""
    started = time.monotonic()
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return time.monotonic() - started
        assert time.monotonic() - started < deadline, "condition not met in time"
        await anyio.sleep(0.02)


# The counter alone


@pytest.mark.anyio
async def test_two_counters_share_one_cap(redis_server: RedisServer) -> None:
    async with counter(redis_server) as one, counter(redis_server) as two:
        with anyio.fail_after(TIMEOUT):
            assert await one.acquire(HERE)
            assert await two.acquire(HERE)
            assert await one.acquire(HERE)
            assert not await two.acquire(HERE)
            assert not await one.acquire(HERE)
            assert (await one.count(HERE), one.held(HERE), two.held(HERE)) == (3, 2, 1)
            # A refusal counted nothing; a release frees a slot for the other.
            await one.release(HERE)
            assert await two.acquire(HERE)
            assert await two.count(HERE) == 3
            # Another address has a cap of its own.
            assert await one.acquire(("address", "10.0.0.1"))
            for held in (one, one, two, two):
                await held.release(HERE)
            await one.release(("address", "10.0.0.1"))
            await one.release(HERE)  # nothing held: ignored
            assert await two.count(HERE) == 0
    # Nothing left but the processes' heartbeats (which expire).
    assert redis_server.command("KEYS", "{securemcp}:conns:*") == ""


@pytest.mark.anyio
async def test_keys_are_encoded_and_expire_with_their_holders(redis_server: RedisServer) -> None:
    async with counter(redis_server, prefix="app", ttl=1.0) as one:
        with anyio.fail_after(TIMEOUT):
            assert await one.acquire(("principal", "a:b/c"))
            assert (
                redis_server.command("KEYS", "{app}:conns:*") == "{app}:conns:principal:a%3Ab%2Fc"
            )
            with pytest.raises(TypeError):
                one.redis_key(("address", 1))
    # The process is gone without a word: its hash outlives it by at most the ttl.
    with anyio.fail_after(TIMEOUT):
        await eventually(lambda: redis_server.command("KEYS", "{app}:*") == "")


@pytest.mark.anyio
async def test_a_crashed_process_slots_come_back_after_its_ttl(redis_server: RedisServer) -> None:
    async with counter(redis_server, ttl=1.0) as survivor:
        crashed = counter(redis_server, ttl=1.0)
        async with crashed:
            assert await crashed.acquire(HERE)
            assert await crashed.acquire(HERE)
        # Its context is over without a release: its heartbeat has stopped.
        with anyio.fail_after(TIMEOUT):
            assert await survivor.acquire(HERE)
            assert not await survivor.acquire(HERE)
            waited = await eventually(lambda: survivor.acquire(HERE))
            assert waited < 2.5
            assert await survivor.acquire(HERE)
            assert not await survivor.acquire(HERE)
            # The dead process's field is gone from the hash.
            assert redis_server.command("HKEYS", HASH) == survivor.process_id


@pytest.mark.anyio
async def test_the_heartbeat_keeps_a_live_process_and_puts_lost_counts_back(
    redis_server: RedisServer,
) -> None:
    async with counter(redis_server, ttl=0.6) as one, counter(redis_server, ttl=0.6) as two:
        with anyio.fail_after(TIMEOUT):
            assert await one.acquire(HERE)
            assert await one.acquire(HERE)
            # Well past the ttl: the heartbeat kept the slots alive.
            await anyio.sleep(1.5)
            assert await two.count(HERE) == 2
            # Redis loses everything (a restart without persistence, say).
            redis_server.command("FLUSHALL")
            assert await two.count(HERE) == 0
            assert await one.beat()
            assert await two.count(HERE) == 2
            assert await two.acquire(HERE)
            assert not await two.acquire(HERE)


@pytest.mark.anyio
async def test_heartbeats_racing_with_decisions_keep_the_count_exact(
    redis_server: RedisServer,
) -> None:
    async with counter(redis_server, 1000) as one, counter(redis_server, 1000) as two:
        with anyio.fail_after(TIMEOUT):
            churning = 4

            async def churn() -> None:
                nonlocal churning
                for _ in range(50):
                    assert await one.acquire(HERE)
                for _ in range(25):
                    await one.release(HERE)
                churning -= 1

            async def beat() -> None:
                while churning:
                    assert await one.beat()

            async with anyio.create_task_group() as tg:
                for _ in range(churning):
                    tg.start_soon(churn)
                tg.start_soon(beat)
            assert one.held(HERE) == 100
            assert await two.count(HERE) == 100


@pytest.mark.anyio
async def test_operations_cut_short_are_corrected_by_the_next_heartbeat(
    redis_server: RedisServer,
) -> None:
    async with counter(redis_server) as one, counter(redis_server) as two:
        with anyio.fail_after(TIMEOUT):
            assert await one.acquire(HERE)
            # Redis holds every command for 0.4 s; the caller gives up after 0.1 s.
            redis_server.command("CLIENT", "PAUSE", "400", "ALL")
            with anyio.move_on_after(0.1):
                await one.release(HERE)
            with anyio.move_on_after(0.1):
                await one.acquire(HERE)
            assert one.held(HERE) == 0  # what this process knows it holds
            await anyio.sleep(0.4)
            # Whatever the paused scripts did once they ran, the heartbeat says the truth.
            assert await one.beat()
            assert await two.count(HERE) == 0
            assert redis_server.command("HLEN", HASH) == "0"


def test_parameters_are_checked(redis_server: RedisServer) -> None:
    for cap in (0, True, 1.5):
        with pytest.raises(ValueError, match="max_per_key"):
            counter(redis_server, cap)  # type: ignore[arg-type]
    for ttl in (0.05, math.inf, math.nan):
        with pytest.raises(ValueError, match="ttl"):
            counter(redis_server, ttl=ttl)
    with pytest.raises(ValueError, match="retry_interval"):
        counter(redis_server, retry_interval=-1)


@pytest.mark.anyio
async def test_without_redis_each_process_counts_its_own_then_shares_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.redis")
    options = {"timeout": 0.5, "retry_interval": 0.2}
    async with (
        counter(redis_server, 2, **options) as one,
        counter(redis_server, 2, **options) as two,
    ):
        with anyio.fail_after(TIMEOUT):
            assert await one.acquire(HERE)
            redis_server.kill()
            for process, admitted in ((one, 1), (two, 2)):
                for _ in range(admitted):
                    started = time.monotonic()
                    assert await process.acquire(HERE)
                    assert time.monotonic() - started < 1.0
                assert not await process.acquire(HERE)
            await one.release(HERE)
            assert one.held(HERE) == 1
            assert await one.count(HERE) == 1  # its own, while Redis is away
            outages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
            assert len(outages) == 2, outages  # once per counter, not per decision
            assert all("connection caps hold per process" in line for line in outages)

            redis_server.restart()
            # The heartbeats put what each process holds back in Redis: 1 + 2.
            await eventually(lambda: _counted(two, 3))
            # Over the cap now (each process admitted alone): none until two leave.
            assert not await one.acquire(HERE)
            await two.release(HERE)
            assert not await one.acquire(HERE)
            await two.release(HERE)
            assert await one.acquire(HERE)
            assert not await two.acquire(HERE)
    gc.collect()
    assert len([r for r in caplog.records if r.getMessage().endswith("/0 is back")]) == 2


async def _counted(process: RedisConnectionCounter, expected: int) -> bool:
    return await process.count(HERE) == expected
