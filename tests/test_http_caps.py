"""Connection caps on MCP Streamable HTTP: what a WebSocket connection holds, an HTTP one holds.

A keep-alive HTTP connection takes its address's ``max_connections_per_address``
slot with its first request to ``/mcp`` and the ``max_connections_per_principal``
slot of the principal its requests carry; both come back when it ends, however
it ends. Over a cap: 429, ``Retry-After``, ``Connection: close``. The caps are
shared with the WebSocket upgrades on the same port, and through Redis across
servers. Asyncio, trio and asyncio's anyio path, on real sockets.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute

from securemcp import SecureMCP, SecurityPolicy
from securemcp.errors import HandshakeRejected
from securemcp.redis import RedisConnectionCounter
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving
from .redis_server import RedisServer
from .security.conftest import ADMIN_TOKEN, USER_TOKEN, ToolLog, hostile_app, token_policy, wait_for
from .security.http_peer import HTTPPeer, mcp_post, message, tool_call

TIMEOUT = 10.0
HERE = "127.0.0.1"


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


@asynccontextmanager
async def capped(policy: SecurityPolicy, **options: Any) -> AsyncIterator[tuple[int, Any]]:
    """Serve the hostile app under ``policy``; yields the port and the transport's guard."""
    options.setdefault("shutdown_grace", 1.0)
    options.setdefault("close_timeout", 1.0)
    transport = WebSocketTransport(hostile_app(ToolLog()), security=policy, **options)
    async with serving(transport) as port:
        with anyio.fail_after(TIMEOUT):
            yield port, transport._settings.guard


async def connect(port: int, request: bytes = b"") -> HTTPPeer:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    if request:
        await stream.send(request)
    return HTTPPeer(stream)


async def served(port: int, *headers: tuple[str, str]) -> HTTPPeer:
    """A keep-alive connection that has had one call answered (and so holds its slots)."""
    peer = await connect(port, tool_call("echo", 1, *headers, message="hi"))
    answer = await peer.answer()
    assert answer.status == 200, answer.body
    return peer


async def refused_429(port: int, *headers: tuple[str, str]) -> str:
    """A request on a new connection is refused over a cap; the JSON-RPC error's message."""
    peer = await connect(port, tool_call("echo", 1, *headers, message="no"))
    async with peer.stream:
        answer = await peer.answer()
        assert answer.status == 429
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["connection"] == "close"
        assert await peer.until_eof() == b""  # and the connection is closed
    error = answer.json()["error"]
    assert error["code"] == -31013
    return str(error["message"])


async def ws_refused(port: int, **options: Any) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as refusal:
        async with WebSocketClient(f"ws://127.0.0.1:{port}/", **options):
            pass
    return refusal.value


@pytest.mark.anyio
async def test_an_http_connection_holds_its_address_slot_until_it_ends() -> None:
    async with capped(SecurityPolicy(max_connections_per_address=2)) as (port, guard):
        idle = await connect(port)  # no request yet: no slot
        first, second = await served(port), await served(port)
        assert guard.open_for_address(HERE) == 2
        assert await refused_429(port) == "Too many connections from this address (HTTP 429)"
        # One count for both transports on the port.
        refusal = await ws_refused(port)
        assert refusal.status_code == 429
        assert refusal.header("retry-after") == "1"
        # More requests on a connection that holds its slot are served.
        await second.stream.send(tool_call("echo", 2, message="again"))
        assert (await second.answer()).status == 200
        await first.stream.aclose()
        await wait_for(lambda: guard.open_for_address(HERE) == 1)
        await idle.stream.send(tool_call("echo", 3, message="now"))
        assert (await idle.answer()).status == 200
        assert guard.open_for_address(HERE) == 2
        await second.stream.aclose()
        await idle.stream.aclose()
        await wait_for(lambda: guard.open_for_address(HERE) == 0)


@pytest.mark.anyio
async def test_a_principal_over_its_cap_gets_429_and_others_are_spared() -> None:
    policy = token_policy(allow_anonymous=True, max_connections_per_principal=1)
    async with capped(policy) as (port, guard):
        bob = await served(port, bearer(USER_TOKEN))
        body = await refused_429(port, bearer(USER_TOKEN))
        assert body == "Too many connections for this principal (HTTP 429)"
        alice = await served(port, bearer(ADMIN_TOKEN))
        anonymous = [await served(port), await served(port)]  # anonymous: no principal slot
        assert (guard.open_for_principal("bob"), guard.open_for_principal("alice")) == (1, 1)
        # Another principal on the same connection: its slot replaces the first's.
        await alice.stream.send(tool_call("echo", 2, message="as nobody"))
        assert (await alice.answer()).status == 200
        assert guard.open_for_principal("alice") == 0
        await anonymous[0].stream.send(tool_call("echo", 2, bearer(ADMIN_TOKEN), message="a"))
        assert (await anonymous[0].answer()).status == 200
        assert guard.open_for_principal("alice") == 1
        # A connection switching to a principal at its cap is refused, and closed.
        await alice.stream.send(tool_call("echo", 3, bearer(USER_TOKEN), message="as bob"))
        assert (await alice.answer()).status == 429
        assert await alice.until_eof() == b""
        await bob.stream.aclose()
        await wait_for(lambda: guard.open_for_principal("bob") == 0)
        async with (await served(port, bearer(USER_TOKEN))).stream:
            assert guard.open_for_principal("bob") == 1
        for peer in (alice, *anonymous):
            await peer.stream.aclose()
        await wait_for(lambda: guard.open_for_address(HERE) + guard.open_for_principal("bob") == 0)


async def _aborted_mid_call(port: int) -> None:
    peer = await connect(port, tool_call("hold"))
    await anyio.sleep(0.05)  # the call starts (or not): either way the slot must come back
    raw = peer.stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await peer.stream.aclose()


async def _closed_mid_call(port: int) -> None:
    peer = await connect(port, tool_call("hold"))
    await anyio.sleep(0.05)
    await peer.stream.aclose()


async def _idle_until_the_timeout(port: int) -> None:
    peer = await served(port)
    async with peer.stream:
        assert await peer.until_eof() == b""


async def _slow_second_body(port: int) -> None:
    peer = await served(port)
    async with peer.stream:
        await peer.stream.send(tool_call("echo", 2, message="slow")[:-5])
        assert await peer.until_eof() == b""


async def _malformed_then_gone(port: int) -> None:
    peer = await served(port)
    async with peer.stream:
        await peer.stream.send(mcp_post(b"{"))
        assert (await peer.answer()).status == 400


async def _body_too_large(port: int) -> None:
    peer = await served(port)
    async with peer.stream:
        request = mcp_post(b"x" * (2 * 1024 * 1024))  # over the 1 MiB default
        await peer.stream.send(request[: request.index(b"\r\n\r\n") + 4])
        assert (await peer.answer()).status == 413


async def _refused_media(port: int) -> None:
    peer = await served(port)
    async with peer.stream:
        request = tool_call("echo", 2, message="x").replace(
            b"application/json\r\n", b"text/plain\r\n", 1
        )
        await peer.stream.send(request)
        assert (await peer.answer()).status == 415


@pytest.mark.anyio
@pytest.mark.parametrize(
    "ending",
    [
        _aborted_mid_call,
        _closed_mid_call,
        _idle_until_the_timeout,
        _slow_second_body,
        _malformed_then_gone,
        _body_too_large,
        _refused_media,
    ],
    ids=lambda ending: ending.__name__.strip("_"),
)
async def test_no_slot_leaks_however_the_connection_ends(ending: Any) -> None:
    # A cap of one: any slot not given back would refuse the next connection.
    policy = token_policy(
        allow_anonymous=True, max_connections_per_address=1, max_connections_per_principal=1
    )
    async with capped(policy, handshake_timeout=0.3) as (port, guard):
        for _ in range(2):
            await ending(port)
            await wait_for(lambda: guard.open_for_address(HERE) == 0)
        async with (await served(port, bearer(ADMIN_TOKEN))).stream:
            assert guard.open_for_principal("alice") == 1
        await wait_for(lambda: guard.open_for_principal("alice") == 0)


@pytest.mark.anyio
async def test_a_full_server_answers_503_and_closes() -> None:
    async with capped(SecurityPolicy(), max_connections=1) as (port, _):
        first = await served(port)
        peer = await connect(port, mcp_post(message("tools/list")))
        async with first.stream, peer.stream:
            answer = await peer.answer()
            assert (answer.status, answer.headers["connection"]) == (503, "close")
            assert answer.json()["error"]["code"] == -31503
            assert await peer.until_eof() == b""


# Shared through Redis


class GatedCounter(RedisConnectionCounter):
    """The real counter, whose acquire waits until the test opens ``gate``."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.gate = anyio.Event()
        self.decided = 0

    async def acquire(self, key: Any) -> bool:
        await self.gate.wait()
        answer = await super().acquire(key)
        self.decided += 1
        return answer


def echo_app() -> SecureMCP:
    return hostile_app(ToolLog())


@pytest.mark.anyio
async def test_http_and_websocket_connections_share_a_cap_through_redis(
    redis_server: RedisServer,
) -> None:
    one = RedisConnectionCounter(redis_server.url, 2)
    two = RedisConnectionCounter(redis_server.url, 2)
    async with (
        capped(SecurityPolicy(max_connections_per_address=one)) as (port_a, _),
        capped(SecurityPolicy(max_connections_per_address=two)) as (port_b, _),
    ):
        first = await served(port_a)
        async with WebSocketClient(f"ws://127.0.0.1:{port_b}/"):
            assert await refused_429(port_a) == "Too many connections from this address (HTTP 429)"
            assert await refused_429(port_b) == "Too many connections from this address (HTTP 429)"
            await first.stream.aclose()
            # Given back in Redis once server A saw the close: B takes it.
            await wait_for(lambda: one.held(("address", HERE)) == 0)
            async with (await served(port_b)).stream:
                assert two.held(("address", HERE)) == 2
    assert redis_server.command("KEYS", "{securemcp}:conns:*") == ""


@pytest.mark.anyio
async def test_a_request_timing_out_while_the_shared_cap_is_decided_leaks_no_slot(
    redis_server: RedisServer,
) -> None:
    gated = GatedCounter(redis_server.url, 1)
    policy = SecurityPolicy(max_connections_per_address=gated)
    async with capped(policy, handshake_timeout=0.2) as (port, _):
        peer = await connect(port, tool_call("echo", 1, message="waiting"))
        async with peer.stream:
            assert await peer.until_eof() == b""  # the timeout ended it: no answer
        gated.gate.set()  # the decision comes, for nobody: the slot goes back
        await wait_for(lambda: gated.decided == 1)
        await wait_for(
            lambda: redis_server.command("HLEN", "{securemcp}:conns:address:127.0.0.1") == "0"
        )
        async with (await served(port)).stream:
            assert gated.held(("address", HERE)) == 1
