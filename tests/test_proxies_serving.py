"""Trusted reverse proxies on a real server: the forwarded client is who the limits count.

The test client on 127.0.0.1 plays the proxy, sending the ``X-Forwarded-For``
a proxy would. Over MCP Streamable HTTP each request is its own client's (one
keep-alive connection carries several); a WebSocket connection is the client's
that its upgrade names. A peer that is not a trusted proxy gains nothing by
sending the header. Asyncio, trio and asyncio's anyio path, on real sockets;
the shared rate limiter against a real redis-server.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from securemcp import SecurityPolicy
from securemcp.ratelimit import RateLimiter
from securemcp.redis import RedisRateLimiter
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving
from .http_helpers import LIMIT, MODERN, Raw, one, post, raw, rpc, transport
from .redis_server import RedisServer
from .security_backend_helpers import refusal, wait_until_idle

PROXY = "127.0.0.1"
ALICE = "203.0.113.7"
BOB = "2001:db8::b0b"
SLOW = 0.01
"""A refill rate (tokens per second) slow enough that no test sees a token come back."""


def call(forwarded: str | None = None) -> bytes:
    """An anonymous ``echo`` call, forwarded for ``forwarded`` (an ``X-Forwarded-For`` value)."""
    body = rpc("tools/call", name="echo", arguments={"message": "x"}, _meta=MODERN)
    return post(body, "" if forwarded is None else f"X-Forwarded-For: {forwarded}\r\n")


async def limited(client: Raw, forwarded: str | None = None) -> bool:
    """Whether the next call on ``client`` is rate limited (-31029) rather than answered."""
    await client.stream.send(call(forwarded))
    answer = await client.answer()
    assert answer.status == 200, answer.body
    message = answer.json()
    if "error" in message:
        assert message["error"]["code"] == -31029
        return True
    assert message["result"]["content"] == [{"type": "text", "text": "x"}]
    return False


def security_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "securemcp.security"]


@pytest.fixture(autouse=True)
def _security_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="securemcp.security")


def limiting(**options: Any) -> SecurityPolicy:
    return SecurityPolicy(rate_limiter=RateLimiter(rate=SLOW, burst=2), **options)


# MCP Streamable HTTP


@pytest.mark.anyio
async def test_a_trusted_proxys_clients_get_their_own_budgets_on_one_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = limiting(trusted_proxies=(PROXY,))
    async with serving(transport(security=policy)) as port, raw(port) as proxy:
        with anyio.fail_after(LIMIT):
            # Requests of two clients, interleaved as a proxy pools them.
            assert [await limited(proxy, ALICE) for _ in range(2)] == [False, False]
            assert not await limited(proxy, f"{BOB}, {PROXY}")
            assert await limited(proxy, ALICE)
            assert not await limited(proxy, BOB)
            assert await limited(proxy, BOB)
            # The proxy's own requests (no header) are a third budget.
            assert not await limited(proxy)
    log = "\n".join(security_log(caplog))
    assert f"by connection from {ALICE} via ('{PROXY}', " in log
    assert f"by connection from {BOB} via ('{PROXY}', " in log


@pytest.mark.anyio
async def test_an_untrusted_peer_gains_nothing_by_naming_other_clients() -> None:
    # Proxies are configured, but not this peer: its headers are not read.
    policy = limiting(trusted_proxies=("192.0.2.0/24", "::1"))
    async with serving(transport(security=policy)) as port:
        with anyio.fail_after(LIMIT):
            async with raw(port) as client:
                assert not await limited(client, ALICE)
                assert not await limited(client, BOB)
                assert await limited(client, "198.51.100.1")
            # A new connection is no way out either: it is the same address.
            async with raw(port) as again:
                assert await limited(again, "198.51.100.2")


@pytest.mark.anyio
async def test_a_malformed_header_counts_as_the_proxy_itself() -> None:
    policy = limiting(trusted_proxies=(PROXY,))
    async with serving(transport(security=policy)) as port, raw(port) as proxy:
        with anyio.fail_after(LIMIT):
            assert not await limited(proxy, "unknown")
            assert not await limited(proxy, f"{ALICE}, not-an-address")
            # Both went to the proxy's own budget, now spent.
            assert await limited(proxy)
            assert await limited(proxy, "")
            # A client named properly still has its own.
            assert not await limited(proxy, ALICE)


@pytest.mark.anyio
async def test_a_trusted_proxys_connections_take_no_address_slot() -> None:
    # One connection per address: a proxy's pooled connections would be capped at one.
    policy = SecurityPolicy(max_connections_per_address=1, trusted_proxies=(PROXY,))
    served = transport(security=policy)
    guard = served._settings.guard
    async with serving(served) as port, raw(port) as first, raw(port) as second:
        with anyio.fail_after(LIMIT):
            assert not await limited(first, ALICE)
            assert not await limited(second, ALICE)
            assert not await limited(second)
            assert guard.open_for_address(PROXY) == 0
            assert guard.open_for_address(ALICE) == 0
    # Where the peer is no trusted proxy, the cap holds as before.
    untrusted = SecurityPolicy(max_connections_per_address=1, trusted_proxies=("192.0.2.1",))
    async with serving(transport(security=untrusted)) as port, raw(port) as first:
        with anyio.fail_after(LIMIT):
            assert not await limited(first, ALICE)
            answer = await one(port, call(BOB))
            assert answer.status == 429


@pytest.mark.anyio
async def test_forwarded_clients_budgets_are_shared_through_redis(
    redis_server: RedisServer,
) -> None:
    """The asynchronous limiter's check keys on the forwarded client too."""
    async with RedisRateLimiter(redis_server.url, SLOW, 2) as shared:
        policy = SecurityPolicy(rate_limiter=shared, trusted_proxies=(PROXY,))
        async with serving(transport(security=policy)) as port, raw(port) as proxy:
            with anyio.fail_after(LIMIT):
                assert [await limited(proxy, ALICE) for _ in range(3)] == [False, False, True]
                assert not await limited(proxy, BOB)
        keys = sorted(redis_server.command("KEYS", "*").split())
    assert keys == [
        "{securemcp}:ratelimit-address:2001%3Adb8%3A%3Ab0b",
        "{securemcp}:ratelimit-address:203.0.113.7",
    ]


# WebSocket


def ws_transport(policy: SecurityPolicy) -> WebSocketTransport:
    return WebSocketTransport(transport().app, security=policy, shutdown_grace=2.0)


def forwarded_for(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


@pytest.mark.anyio
async def test_websocket_connections_are_capped_per_forwarded_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = SecurityPolicy(max_connections_per_address=2, trusted_proxies=(PROXY,))
    served = ws_transport(policy)
    guard = served._settings.guard
    async with serving(served) as port:
        url = f"ws://127.0.0.1:{port}/"
        with anyio.fail_after(LIMIT):
            async with (
                WebSocketClient(url, headers=forwarded_for(ALICE)) as first,
                WebSocketClient(url, headers=forwarded_for(f"{ALICE}, {PROXY}")),
            ):
                refused = await refusal(url, headers=forwarded_for(ALICE))
                assert refused.status_code == 429
                assert refused.body == b"too many connections from this address\n"
                async with WebSocketClient(url, headers=forwarded_for(BOB)) as bob:
                    assert await bob.invoke_tool("echo", {"message": "bob"}) == "bob"
                    assert guard.open_for_address(BOB) == 1
                assert await first.invoke_tool("echo", {"message": "alice"}) == "alice"
                assert guard.open_for_address(ALICE) == 2
                assert guard.open_for_address(PROXY) == 0
            await wait_until_idle(served)
            assert guard.open_for_address(ALICE) == 0
    assert any(
        line.startswith(f"handshake from {ALICE} via ('{PROXY}', ") and "HTTP 429" in line
        for line in security_log(caplog)
    )


@pytest.mark.anyio
async def test_websocket_peers_not_trusted_or_not_forwarding_count_as_themselves() -> None:
    policy = SecurityPolicy(max_connections_per_address=2, trusted_proxies=("192.0.2.1",))
    served = ws_transport(policy)
    async with serving(served) as port:
        url = f"ws://127.0.0.1:{port}/"
        with anyio.fail_after(LIMIT):
            async with (
                WebSocketClient(url, headers=forwarded_for(ALICE)),
                WebSocketClient(url, headers=forwarded_for(BOB)),
            ):
                refused = await refusal(url, headers=forwarded_for("198.51.100.1"))
                assert refused.status_code == 429
                assert served._settings.guard.open_for_address(PROXY) == 2
    # A trusted proxy whose header is garbage, or missing, is the connection's client itself.
    trusting = ws_transport(SecurityPolicy(max_connections_per_address=2, trusted_proxies=(PROXY,)))
    async with serving(trusting) as port:
        url = f"ws://127.0.0.1:{port}/"
        with anyio.fail_after(LIMIT):
            async with (
                WebSocketClient(url, headers=forwarded_for("garbage")),
                WebSocketClient(url),
            ):
                assert (await refusal(url, headers=forwarded_for("::zz"))).status_code == 429
                assert trusting._settings.guard.open_for_address(PROXY) == 2
