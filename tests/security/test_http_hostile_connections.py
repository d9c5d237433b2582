"""Hostile HTTP connections and credentials: the twins of ``test_hostile_connections.py``.

Hundreds of connections, bodies that never finish, heads dripping on a
keep-alive connection, bad or expiring credentials, forbidden scopes, foreign
origins, a principal flooding calls: each gets its defined answer, the memory
stays bounded, and everyone else (a WebSocket bystander, HTTP clients) is served.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import anyio
import jwt
import pytest

from securemcp import OriginPolicy, SecurityPolicy
from securemcp.auth import JWTAuthenticator
from securemcp.protocol import Limits
from securemcp.ratelimit import RateLimiter

from .attacks import dropped_at_the_timeout, opened_peers
from .conftest import (
    ADMIN_TOKEN,
    USER_TOKEN,
    MemoryWatch,
    hostile_server,
    token_policy,
    wait_for,
)
from .http_peer import HTTPPeer, http_peer, http_probe, mcp_post, message, tool_call
from .test_fairness import PROMPT
from .test_hostile_connections import SECRET, raise_fd_limit

CONNECTIONS = 500
PER_CONNECTION = 48 * 1024
"""Python memory one open HTTP connection may cost, both ends counted (the server's
driver, cores and h11 state; the raw peer's stream and buffers; the event loop's
handles). A connection that kept its request or answer would cost more; the
test fails on a bound per connection, not on a total that grows with the count."""


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


@pytest.mark.anyio
async def test_500_concurrent_http_connections_are_served_with_bounded_memory() -> None:
    available = raise_fd_limit(2 * CONNECTIONS + 200)
    assert available >= 2 * CONNECTIONS + 200, f"RLIMIT_NOFILE allows only {available}"
    async with hostile_server(max_connections=CONNECTIONS + 2) as server:
        peers: list[HTTPPeer] = []
        try:
            with MemoryWatch() as memory:
                for index in range(CONNECTIONS):
                    peers.append(await http_peer(server, tool_call("echo", index, message="m")))
                # Every connection open at once, each answered on its own.
                for index, peer in enumerate(peers):
                    reply = (await peer.answer()).json()
                    assert (reply["id"], reply["result"]["content"][0]["text"]) == (index, "m")
                assert server.transport.open_connections == CONNECTIONS + 1  # + the bystander
                # Meanwhile a newcomer is served promptly.
                start = anyio.current_time()
                await http_probe(server)
                assert anyio.current_time() - start < PROMPT
                peak = memory.peak_growth()
                for peer in peers:
                    await peer.stream.aclose()
                peers.clear()  # the peers' own objects are not the server's
                await wait_for(lambda: server.transport.open_connections == 1)
                gc.collect()
                left = memory.growth()
        finally:
            for peer in peers:
                await peer.stream.aclose()
    assert peak < CONNECTIONS * PER_CONNECTION, f"{peak / CONNECTIONS:.0f} bytes a connection"
    # Gone with its connection: what stays is the event loop's bookkeeping, not the connections.
    assert left < peak / 4, f"{left} bytes left of a peak of {peak}"
    print(f"{CONNECTIONS} HTTP connections: {peak / CONNECTIONS:.0f} bytes each; {left} left")


@pytest.mark.anyio
async def test_slowloris_bodies_are_closed_by_the_handshake_timeout() -> None:
    # A head announcing 100 bytes of body, then ten of them, then nothing (or
    # a byte now and then): the handshake timeout bounds the whole request.
    timeout = 1.0
    head = tool_call("echo", message="x" * 80)
    partial = head[: len(head) - 90]
    async with (
        hostile_server(handshake_timeout=timeout, max_connections=400) as server,
        opened_peers(lambda: http_peer(server, partial), 300) as (peers, opened),
    ):

        async def drip(peer: HTTPPeer) -> None:
            # Never past the body's end: that would complete the request.
            for _ in range(10):
                await anyio.sleep(timeout / 5)
                try:
                    await peer.stream.send(b"x")
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    return

        async def meanwhile() -> None:
            async with anyio.create_task_group() as tg:
                for peer in peers[:20]:
                    tg.start_soon(drip, peer)
                await http_probe(server)  # served at once while they hang

        await dropped_at_the_timeout(peers, opened, timeout, meanwhile)
        await wait_for(lambda: server.transport.open_connections == 1)


@pytest.mark.anyio
async def test_a_head_dripping_on_a_keep_alive_connection_gets_431_at_the_size_limit() -> None:
    async with hostile_server(limits=Limits(max_handshake_size=4096)) as server:
        prefix = b"POST /mcp HTTP/1.1\r\nX-Drip: "
        peer = await http_peer(server, tool_call("echo", message="first") + prefix)
        async with peer.stream:
            assert (await peer.answer()).status == 200
            sent = len(prefix)
            while sent <= 4096:  # just past the limit; more would meet a reset
                await peer.stream.send(b"a" * 100)
                sent += 100
            answer = await peer.answer()
            assert answer.status == 431
            assert await peer.until_eof() == b""


@pytest.mark.anyio
async def test_the_last_answer_of_a_keep_alive_connection_closes_it() -> None:
    # The second request is the last one served (max_http_requests), and its
    # answer comes from a call's own task: the server says close, and closes.
    async with hostile_server(limits=Limits(max_http_requests=2)) as server:
        peer = await http_peer(
            server, tool_call("echo", 1, message="one") + tool_call("blob_later", 2, size=10)
        )
        async with peer.stream:
            assert "connection" not in (await peer.answer()).headers
            last = await peer.answer()
            assert last.headers["connection"] == "close"
            assert last.json()["result"]["content"][0]["text"] == "x" * 10
            assert await peer.until_eof() == b""


# Credentials, scopes, origins


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param((), id="missing"),
        pytest.param((bearer("not-a-known-token"),), id="wrong"),
        pytest.param((("Authorization", "Bearer"),), id="empty-bearer"),
        pytest.param((("Authorization", "Basic YTpi"),), id="basic"),
        pytest.param((bearer("x" * 8000),), id="huge"),
    ],
)
async def test_missing_or_wrong_token_gets_401(headers: tuple[tuple[str, str], ...]) -> None:
    good = {"token": ADMIN_TOKEN}
    async with hostile_server(security=token_policy(), client_options=good) as server:
        peer = await http_peer(server, mcp_post(message("tools/list"), *headers))
        async with peer.stream:
            answer = await peer.answer()
        assert answer.status == 401
        assert answer.headers["www-authenticate"].startswith("Bearer ")
        await http_probe(server, token=ADMIN_TOKEN)


@pytest.mark.anyio
async def test_a_token_expiring_between_requests_gets_401_on_the_next() -> None:
    policy = SecurityPolicy(authenticator=JWTAuthenticator(SECRET))
    now = time.time()
    good = jwt.encode({"sub": "carol", "exp": int(now) + 300}, SECRET, algorithm="HS256")
    brief = jwt.encode({"sub": "dave", "exp": int(now) + 2}, SECRET, algorithm="HS256")
    async with hostile_server(security=policy, client_options={"token": good}) as server:
        peer = await http_peer(server, tool_call("echo", 1, bearer(brief), message="in time"))
        async with peer.stream:
            assert (await peer.answer()).status == 200
            # The same keep-alive connection, once the token's time is up.
            await anyio.sleep(max(0.0, int(now) + 2 - time.time()) + 0.05)
            await peer.stream.send(tool_call("echo", 2, bearer(brief), message="late"))
            late = await peer.answer()
        assert late.status == 401
        assert 'error="invalid_token"' in late.headers["www-authenticate"]


@pytest.mark.anyio
async def test_scopes_hold_over_http_and_the_tool_does_not_run() -> None:
    policy = token_policy(allow_anonymous=True)
    async with hostile_server(security=policy) as server:
        peer = await http_peer(
            server,
            tool_call("purge", 1)  # anonymous
            + tool_call("purge", 2, bearer(USER_TOKEN))  # bob, no scope
            + tool_call("purge", 3, bearer(ADMIN_TOKEN)),  # alice, admin
        )
        async with peer.stream:
            codes = [(await peer.answer()).json() for _ in range(3)]
    assert codes[0]["error"]["code"] == -31001
    assert codes[1]["error"]["code"] == -31003
    assert codes[2]["result"]["content"][0]["text"] == "purged"
    assert server.log.admin_calls == 1  # alice's call alone


@pytest.mark.anyio
@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "https://app.example.evil.example", "http://app.example"],
)
async def test_a_foreign_origin_gets_403(origin: str) -> None:
    policy = SecurityPolicy(origins=OriginPolicy(["https://app.example"]))
    async with hostile_server(security=policy) as server:
        echoes = server.log.echoes
        refused = await http_peer(server, tool_call("echo", 1, ("Origin", origin), message="x"))
        allowed = await http_peer(
            server, tool_call("echo", 1, ("Origin", "https://app.example"), message="x")
        )
        async with refused.stream, allowed.stream:
            assert (await refused.answer()).status == 403
            assert (await allowed.answer()).status == 200
        assert server.log.echoes == echoes + 1  # the refused call never ran


# Rate limits


@pytest.mark.anyio
async def test_a_principal_flooding_calls_is_rate_limited_across_its_connections() -> None:
    # Burst 10, then one call every 100 s: a flood of 60 calls over three
    # keep-alive connections runs the tool 10 times; the other 50 get -31029
    # (HTTP 200: a JSON-RPC answer) with the wait to retry, and bob's bucket is
    # his own.
    limiter = RateLimiter(rate=0.01, burst=10)
    policy = token_policy(rate_limiter=limiter)
    options: dict[str, Any] = {"token": ADMIN_TOKEN}
    async with hostile_server(security=policy, client_options=options) as server:
        echoes = server.log.echoes
        peers = [
            await http_peer(
                server,
                b"".join(
                    tool_call("echo", n, bearer(USER_TOKEN), message=str(n))
                    for n in range(c * 20, c * 20 + 20)
                ),
            )
            for c in range(3)
        ]
        answers = []
        for peer in peers:
            async with peer.stream:
                answers += [await peer.answer() for _ in range(20)]
        assert {answer.status for answer in answers} == {200}
        served = [a for a in answers if "result" in a.json()]
        limited = [a.json()["error"] for a in answers if "error" in a.json()]
        assert len(served) == 10
        assert len(limited) == 50
        assert {error["code"] for error in limited} == {-31029}
        assert all(0 < error["data"]["retry_after"] <= 100 for error in limited)
        assert server.log.echoes == echoes + 10  # refused calls never ran
        await http_probe(server, token=ADMIN_TOKEN)  # alice is not bob
