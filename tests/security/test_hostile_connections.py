"""Hostile connections and handshakes, against a real server on asyncio and trio.

Many connections, half-sent handshakes, oversized heads, bad credentials,
forbidden scopes and foreign origins: each gets its defined HTTP status or
JSON-RPC error, and :func:`hostile_server` then proves that a bystander and a
fresh client are still served promptly.
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

import anyio
import jwt
import pytest

from securemcp import OriginPolicy, SecurityPolicy
from securemcp.auth import JWTAuthenticator
from securemcp.errors import Forbidden, HandshakeRejected, Unauthenticated
from securemcp.protocol import Limits
from securemcp.transport import WebSocketClient

from ..helpers import OP_TEXT, UPGRADE_REQUEST, text_frame
from .attacks import dropped_at_the_timeout, opened_peers
from .conftest import (
    ADMIN_TOKEN,
    USER_TOKEN,
    RawPeer,
    Server,
    hostile_server,
    token_policy,
    upgrade_with,
    wait_for,
)

CONNECTIONS = 1000


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return wanted if soft == resource.RLIM_INFINITY else soft


async def open_raw(server: Server) -> RawPeer:
    peer = await server.peer()
    head = await peer.response_head()
    assert head.startswith(b"HTTP/1.1 101 "), head
    await peer.next_frame()  # the welcome
    return peer


@pytest.mark.anyio
async def test_1000_concurrent_connections_are_all_served() -> None:
    # Each connection costs two descriptors here (client and server are one process).
    available = raise_fd_limit(2 * CONNECTIONS + 200)
    count = min(CONNECTIONS, (available - 200) // 2)
    assert count == CONNECTIONS, (
        f"RLIMIT_NOFILE allows only {available} descriptors: tested {count} connections"
    )
    async with hostile_server(max_connections=count + 2) as server:
        peers: list[RawPeer] = []
        try:
            with anyio.fail_after(20):
                for _ in range(count):
                    peers.append(await open_raw(server))
                # Every connection is open at once; each is answered on its own.
                for index, peer in enumerate(peers):
                    await peer.stream.send(text_frame({"id": index, "method": "ping"}))
                for index, peer in enumerate(peers):
                    opcode, payload = await peer.next_frame()
                    assert opcode == OP_TEXT
                    assert json.loads(payload) == {"id": index, "result": {"pong": True}}
                assert server.transport.open_connections == count + 1  # + the bystander
        finally:
            for peer in peers:
                await peer.stream.aclose()


@pytest.mark.anyio
async def test_past_max_connections_the_next_handshake_gets_503() -> None:
    async with hostile_server(max_connections=3) as server:
        async with server.open_peer(), server.open_peer():
            peer = await server.peer()
            async with peer.stream:
                status, _ = await peer.http_answer()
            assert status == 503
        # Slots come back when connections end; the probe then gets in.
        await wait_for(lambda: server.transport.open_connections == 1)


@pytest.mark.anyio
async def test_slowloris_half_sent_handshakes_are_closed_by_the_handshake_timeout() -> None:
    timeout = 1.0
    half = UPGRADE_REQUEST[:40]
    async with (
        hostile_server(handshake_timeout=timeout, max_connections=400) as server,
        opened_peers(lambda: server.peer(half), 300) as (peers, opened),
    ):

        async def served_meanwhile() -> None:
            # While they hang, a normal client is served at once.
            with anyio.fail_after(1.0):
                async with WebSocketClient(server.url) as client:
                    assert await client.invoke_tool("echo", {"message": "hi"}) == "hi"

        # Each is dropped without a byte of answer (no HTTP status), at its timeout.
        await dropped_at_the_timeout(peers, opened, timeout, served_meanwhile)
        await wait_for(lambda: server.transport.open_connections == 1)


@pytest.mark.anyio
async def test_a_head_dripping_forever_gets_431_at_the_size_limit() -> None:
    async with hostile_server(limits=Limits(max_handshake_size=4096)) as server:
        prefix = b"GET / HTTP/1.1\r\nX-Drip: "
        peer = await server.peer(prefix)
        async with peer.stream:
            sent = len(prefix)
            # Drip until just past the limit; more would arrive after the server
            # closed, and the kernel would answer it with a reset.
            while sent <= 4096:
                await peer.stream.send(b"a" * 100)
                sent += 100
            status, body = await peer.http_answer()
        assert status == 431
        assert body == b"Request Header Fields Too Large: handshake exceeds 4096 bytes\n"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(upgrade_with([("X-Big", "b" * 17000)]), 431, id="head-over-16KiB"),
        pytest.param(upgrade_with([(f"X-{n}", "v") for n in range(65)]), 431, id="65-headers"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="not-an-upgrade"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="post"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 4, 400, id="tls-hello"),
        pytest.param(
            UPGRADE_REQUEST.replace(b"Version: 13", b"Version: 8"), 426, id="websocket-version-8"
        ),
        pytest.param(upgrade_with([("Sec-WebSocket-Key", "x" * 24)]), 400, id="two-keys"),
    ],
)
async def test_bad_handshakes_get_their_http_status(request_bytes: bytes, status: int) -> None:
    async with hostile_server() as server:
        peer = await server.peer(request_bytes)
        async with peer.stream:
            answer, _ = await peer.http_answer()
        assert answer == status


# Credentials, scopes, origins

SECRET = "hostile-suite-secret-hostile-suite!!"


async def refused(server: Server, **options: Any) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as refusal:
        async with WebSocketClient(server.url, **options):
            pass
    return refusal.value


@pytest.mark.anyio
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="missing"),
        pytest.param({"token": "not-a-known-token"}, id="wrong"),
        pytest.param({"token": "not-a-known-token", "token_in_subprotocol": True}, id="wrong-sub"),
        pytest.param({"headers": {"Authorization": "Bearer"}}, id="empty-bearer"),
        pytest.param({"headers": {"Authorization": "Basic YTpi"}}, id="basic"),
        pytest.param({"headers": {"Authorization": "Bearer " + "x" * 8000}}, id="huge"),
    ],
)
async def test_missing_or_wrong_token_gets_401(options: dict[str, Any]) -> None:
    good = {"token": ADMIN_TOKEN}
    async with hostile_server(security=token_policy(), client_options=good) as server:
        refusal = await refused(server, **options)
        assert refusal.status_code == 401
        assert (refusal.header("www-authenticate") or "").startswith("Bearer ")


@pytest.mark.anyio
async def test_expired_token_gets_401() -> None:
    policy = SecurityPolicy(authenticator=JWTAuthenticator(SECRET))
    now = int(time.time())
    good = jwt.encode({"sub": "carol", "exp": now + 300}, SECRET, algorithm="HS256")
    expired = jwt.encode({"sub": "carol", "exp": now - 10}, SECRET, algorithm="HS256")
    async with hostile_server(security=policy, client_options={"token": good}) as server:
        refusal = await refused(server, token=expired)
        assert refusal.status_code == 401
        assert 'error="invalid_token"' in (refusal.header("www-authenticate") or "")


@pytest.mark.anyio
async def test_forbidden_scope_gets_31003_and_the_tool_does_not_run() -> None:
    options = {"token": ADMIN_TOKEN}
    async with hostile_server(security=token_policy(), client_options=options) as server:
        async with WebSocketClient(server.url, token=USER_TOKEN) as bob:
            with pytest.raises(Forbidden) as refusal:
                await bob.invoke_tool("purge")
            assert refusal.value.code == -31003
            assert await bob.invoke_tool("echo", {"message": "ok"}) == "ok"
        assert server.log.admin_calls == 0


@pytest.mark.anyio
async def test_anonymous_caller_of_a_scoped_tool_gets_31001() -> None:
    policy = token_policy(allow_anonymous=True)
    async with hostile_server(security=policy) as server:
        async with WebSocketClient(server.url) as anonymous:
            with pytest.raises(Unauthenticated) as refusal:
                await anonymous.invoke_tool("purge")
            assert refusal.value.code == -31001
        assert server.log.admin_calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "https://app.example.evil.example", "http://app.example"],
)
async def test_foreign_origin_gets_403(origin: str) -> None:
    policy = SecurityPolicy(origins=OriginPolicy(["https://app.example"]))
    async with hostile_server(security=policy) as server:
        refusal = await refused(server, headers={"Origin": origin})
        assert refusal.status_code == 403
        async with WebSocketClient(server.url, headers={"Origin": "https://app.example"}) as ok:
            await ok.ping()
