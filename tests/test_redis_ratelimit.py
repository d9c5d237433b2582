"""RedisRateLimiter against a real redis-server: alone, behind two servers, and through an outage.

Two limiter objects on one Redis stand for two processes; two transports on
two ports, each with its own limiter, for two machines.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from securemcp import Principal, SecureMCP, SecurityPolicy, StaticTokenAuthenticator
from securemcp.errors import RateLimited
from securemcp.redis import RedisRateLimiter
from securemcp.transport import WebSocketClient, WebSocketTransport

from .redis_server import RedisServer

TIMEOUT = 10.0
"""Bound of each test's network activity; they finish far sooner."""

TOKEN = "bob-token-5c1e9a"
SLOW = 0.01
"""A refill rate (tokens per second) slow enough that no test sees a token come back."""


def limiter(
    redis_server: RedisServer, rate: float, burst: float, **options: object
) -> RedisRateLimiter:
    """A limiter on ``redis_server``: one per "process"."""
    return RedisRateLimiter(redis_server.url, rate, burst, **options)  # type: ignore[arg-type]


BOB = ("principal", "bob")


# The limiter alone


@pytest.mark.anyio
async def test_a_burst_then_a_refusal_whose_retry_after_is_enough(
    redis_server: RedisServer,
) -> None:
    # 10 per second: the refusal asks for at most 0.1 s.
    async with limiter(redis_server, 10, 3) as shared:
        with anyio.fail_after(TIMEOUT):
            assert [await shared.acheck(BOB, "echo") for _ in range(3)] == [0.0] * 3
            retry_after = await shared.acheck(BOB, "echo")
            assert 0 < retry_after <= 0.1
            assert retry_after == round(retry_after, 3)  # whole milliseconds
            await anyio.sleep(retry_after)
            assert await shared.acheck(BOB, "echo") == 0.0


@pytest.mark.anyio
async def test_a_refused_call_takes_nothing(redis_server: RedisServer) -> None:
    async with limiter(redis_server, 5, 1) as shared:
        with anyio.fail_after(TIMEOUT):
            assert await shared.acheck(BOB, None) == 0.0
            first = await shared.acheck(BOB, None)
            assert 0 < first <= 0.2
            # Refusals in a row: had they taken tokens, the bucket would be in debt.
            for _ in range(5):
                assert await shared.acheck(BOB, None) > 0
            await anyio.sleep(first)
            assert await shared.acheck(BOB, None) == 0.0


@pytest.mark.anyio
async def test_a_per_tool_bucket_bounds_its_tool_and_a_refusal_there_takes_nothing(
    redis_server: RedisServer,
) -> None:
    async with limiter(redis_server, SLOW, 3, per_tool={"slow": (SLOW, 1)}) as shared:
        with anyio.fail_after(TIMEOUT):
            assert await shared.acheck(BOB, "slow") == 0.0
            assert await shared.acheck(BOB, "slow") > 1  # its own bucket is empty...
            # ...and that refusal took nothing from the key's bucket: two left.
            assert await shared.acheck(BOB, "echo") == 0.0
            assert await shared.acheck(BOB, "echo") == 0.0
            assert await shared.acheck(BOB, "echo") > 1
            # Another principal is untouched.
            assert await shared.acheck(("principal", "carol"), "slow") == 0.0


@pytest.mark.anyio
async def test_two_limiters_on_one_redis_share_a_principals_count(
    redis_server: RedisServer,
) -> None:
    async with limiter(redis_server, SLOW, 4) as one, limiter(redis_server, SLOW, 4) as two:
        with anyio.fail_after(TIMEOUT):
            for turn in range(4):
                assert await (one if turn % 2 else two).acheck(BOB, "echo") == 0.0
            assert await one.acheck(BOB, "echo") > 1
            assert await two.acheck(BOB, "echo") > 1


@pytest.mark.anyio
async def test_two_limiters_share_a_client_address_but_not_with_a_principal_so_named(
    redis_server: RedisServer,
) -> None:
    """Anonymous HTTP requests' address buckets span processes, in a namespace of their own."""
    address = ("address", "10.0.0.7")
    async with limiter(redis_server, SLOW, 2) as one, limiter(redis_server, SLOW, 2) as two:
        with anyio.fail_after(TIMEOUT):
            assert await one.acheck(address, "echo") == 0.0
            assert await two.acheck(address, "echo") == 0.0
            assert await one.acheck(address, "echo") > 1
            assert await two.acheck(("principal", "10.0.0.7"), "echo") == 0.0
    assert redis_server.command("DBSIZE") == "2"


@pytest.mark.anyio
async def test_anonymous_keys_stay_in_the_process(redis_server: RedisServer) -> None:
    async with limiter(redis_server, SLOW, 2) as one, limiter(redis_server, SLOW, 2) as two:
        with anyio.fail_after(TIMEOUT):
            # The same id() in two processes must not be one bucket.
            key = ("connection", 12345)
            assert [await one.acheck(key, "echo") for _ in range(3)][2] > 1
            assert await two.acheck(key, "echo") == 0.0
            one.forget(key)
            assert await one.acheck(key, "echo") == 0.0
    assert redis_server.command("DBSIZE") == "0"


@pytest.mark.anyio
async def test_buckets_live_in_redis_until_they_would_be_full(redis_server: RedisServer) -> None:
    async with limiter(redis_server, 10, 2, prefix="app", per_tool={"a:b": (10, 1)}) as shared:
        with anyio.fail_after(TIMEOUT):
            assert await shared.acheck(("principal", "x:y"), "a:b") == 0.0
            keys = redis_server.command("KEYS", "*").split()
            # Percent-encoded: no subject or tool can forge another's key.
            assert sorted(keys) == ["{app}:ratelimit:x%3Ay", "{app}:ratelimit:x%3Ay:a%3Ab"]
            # One token short, refilled in 0.1 s: kept that long plus a second.
            assert 900 < int(redis_server.command("PTTL", "{app}:ratelimit:x%3Ay")) <= 1100
            # Then gone: polled, Redis offers no event for an expiry.
            while redis_server.command("DBSIZE") != "0":  # noqa: ASYNC110
                await anyio.sleep(0.05)


# Behind two servers


def echo_app() -> SecureMCP:
    app = SecureMCP("limited")

    @app.tool()
    async def echo(message: str) -> str:
        return message

    return app


def policy(shared: RedisRateLimiter) -> SecurityPolicy:
    return SecurityPolicy(
        authenticator=StaticTokenAuthenticator({TOKEN: Principal("bob")}),
        allow_anonymous=True,
        rate_limiter=shared,
    )


@asynccontextmanager
async def two_servers(
    redis_server: RedisServer, rate: float, burst: float, **options: object
) -> AsyncIterator[tuple[str, str, RedisRateLimiter, RedisRateLimiter]]:
    """Two transports ("machines") on two ports, each with its own limiter on one Redis."""
    one = limiter(redis_server, rate, burst, **options)
    two = limiter(redis_server, rate, burst, **options)
    async with anyio.create_task_group() as tg:
        urls = []
        for shared in (one, two):
            transport = WebSocketTransport(
                echo_app(), security=policy(shared), shutdown_grace=2.0, close_timeout=2.0
            )
            port = await tg.start(transport.serve, "127.0.0.1", 0)
            urls.append(f"ws://127.0.0.1:{port}/")
        yield urls[0], urls[1], one, two
        tg.cancel_scope.cancel()


async def refused_with(client: WebSocketClient) -> float:
    """The ``retry_after`` of the -31029 an echo call gets (fails if it is allowed)."""
    with pytest.raises(RateLimited) as refused:
        await client.invoke_tool("echo", {"message": "over"})
    assert refused.value.code == -31029
    assert refused.value.message == "Rate limit exceeded"
    retry_after = refused.value.data["retry_after"]
    assert isinstance(retry_after, float)
    return retry_after


@pytest.mark.anyio
async def test_a_principal_calling_two_servers_hits_the_shared_limit(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="securemcp.security")
    async with two_servers(redis_server, SLOW, 4) as (url_a, url_b, _, _):
        with anyio.fail_after(TIMEOUT):
            async with (
                WebSocketClient(url_a, token=TOKEN) as a,
                WebSocketClient(url_b, token=TOKEN) as b,
            ):
                for turn in range(4):
                    client = (a, b)[turn % 2]
                    assert await client.invoke_tool("echo", {"message": str(turn)}) == str(turn)
                assert await refused_with(a) > 1
                assert await refused_with(b) > 1
    assert "call to 'echo' by bob rate limited" in caplog.text


@pytest.mark.anyio
async def test_anonymous_connections_on_two_servers_keep_their_own_buckets(
    redis_server: RedisServer,
) -> None:
    async with two_servers(redis_server, SLOW, 2) as (url_a, url_b, _, _):
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url_a) as a, WebSocketClient(url_b) as b:
                for client in (a, b):
                    for message in ("1", "2"):
                        assert await client.invoke_tool("echo", {"message": message}) == message
                    assert await refused_with(client) > 1
    assert redis_server.command("DBSIZE") == "0"


# Redis down


async def shared_again(*limiters: RedisRateLimiter) -> None:
    """Wait until each limiter decides through Redis again (a probe principal's call)."""
    for shared in limiters:
        while True:
            await shared.acheck(("principal", "probe"), None)
            if shared.fallback is None:
                break
            await anyio.sleep(0.05)


# coredis 6.9 creates a connection's memory streams before connecting and
# closes them only once connected: each refused connection attempt leaves six
# to the garbage collector, which warns. Collected before the test ends (the
# filter would not cover a later test's collection).
@pytest.mark.anyio
async def test_without_redis_each_process_decides_alone_then_shares_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.redis")
    options = {"timeout": 0.5, "retry_interval": 0.2}
    async with two_servers(redis_server, SLOW, 3, **options) as (url_a, url_b, one, two):
        with anyio.fail_after(TIMEOUT):
            async with (
                WebSocketClient(url_a, token=TOKEN) as a,
                WebSocketClient(url_b, token=TOKEN) as b,
            ):
                assert await a.invoke_tool("echo", {"message": "shared"}) == "shared"
                redis_server.kill()
                # Each process has a full bucket of its own, and answers promptly.
                for client in (a, b):
                    for _ in range(3):
                        started = time.monotonic()
                        assert await client.invoke_tool("echo", {"message": "x"}) == "x"
                        assert time.monotonic() - started < 1.5
                    started = time.monotonic()
                    assert await refused_with(client) > 1
                    assert time.monotonic() - started < 1.5
                outages = [
                    record.getMessage()
                    for record in caplog.records
                    if "unavailable" in record.getMessage()
                ]
                # Once per limiter (two "processes"), not once per call.
                assert len(outages) == 2, outages
                assert all("rate limited per process" in line for line in outages)
                assert "-31503" not in caplog.text

                redis_server.restart()
                await shared_again(one, two)
                # The count kept through the restart (AOF): two of three left,
                # now shared again by both servers.
                assert await b.invoke_tool("echo", {"message": "1"}) == "1"
                assert await a.invoke_tool("echo", {"message": "2"}) == "2"
                assert await refused_with(b) > 1
                assert await refused_with(a) > 1
    gc.collect()
    backs = [record for record in caplog.records if record.getMessage().endswith("/0 is back")]
    assert len(backs) == 2
