"""``securemcp.testing.TestClient``: an app's tools called as over the wire, in memory.

Connecting in both dialects, errors exactly as a socket client gets them, who
connects (principals, tokens through the transport's security policy, rate
limits and caps), and the pytest fixture. Notifications, progress,
cancellation, resources and misuse are in ``test_testing_kit_lifecycle.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from securemcp import (
    ConnectionClosed,
    Forbidden,
    HandshakeRejected,
    InvalidParams,
    Principal,
    RateLimited,
    RateLimiter,
    SecurityPolicy,
    ToolError,
    Unauthenticated,
)
from securemcp.protocol import HandshakeRequest, Limits
from securemcp.security import HandshakeAccepted, HandshakeRefused
from securemcp.testing import TestClient
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving
from .testing_kit_helpers import (
    ANN,
    WAIT,
    anyio_backend,  # noqa: F401 - the fixture: both loops
    guarded_transport,
    kit_app,
)


@asynccontextmanager
async def socket_client(transport: WebSocketTransport, **options: Any) -> AsyncIterator[Any]:
    """A real client of ``transport`` served on a loopback socket."""
    async with (
        serving(transport) as port,
        WebSocketClient(f"ws://127.0.0.1:{port}", **options) as client,
    ):
        yield client


def outcome(error: BaseException) -> tuple[Any, ...]:
    """What a caller sees of an error: its type and every field the wire carried."""
    return (
        type(error),
        getattr(error, "code", None),
        str(error),
        getattr(error, "data", None),
        getattr(error, "reason", None),
    )


async def failure_of(call: Awaitable[Any]) -> tuple[Any, ...]:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any error: compared below
        await call
    return outcome(caught.value)


async def answer_of(call: Awaitable[Any]) -> Any:
    """The call's result, or what its error carried."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - compared below
        return outcome(exc)


# Connecting


@pytest.mark.anyio
async def test_the_handshake_greets_and_lists_the_tools_with_their_schemas() -> None:
    app = kit_app()
    async with TestClient(app) as client:
        assert client.welcome is not None
        assert client.welcome.message == "Connected to kit"
        assert "add" in client.welcome.tools
        assert client.subprotocol is None
        tools = {tool["name"]: tool for tool in await client.list_tools()}
        # Anonymous: the tools that need a scope are not listed.
        assert list(tools) == [name for name in app.tools if name != "wipe"]
        assert tools["add"]["inputSchema"] == app.tools["add"].input_schema
        assert tools["add"]["description"] == "Add two integers (b not negative)."
        assert repr(client) == "<TestClient ws://testserver/ open>"
    assert client.closed
    assert client.close_code == 1000


@pytest.mark.anyio
async def test_calls_return_what_the_tools_return() -> None:
    async with TestClient(kit_app()) as client:
        assert await client.invoke_tool("add", {"a": 2, "b": 3}) == 5
        assert await client.invoke_tool("echo", {"text": "hi"}) == "hi"
        assert await client.invoke_tool("whoami") is None
        # Inline tools run where anyio knows the event loop, as on a server.
        assert await client.invoke_tool("clock") == pytest.approx(anyio.current_time(), abs=5)
        assert await client.ping() >= 0
        async with anyio.create_task_group() as tg:
            results: dict[int, int] = {}

            async def one(n: int) -> None:
                results[n] = await client.invoke_tool("add", {"a": n})

            for n in range(20):
                tg.start_soon(one, n)
        assert results == {n: n for n in range(20)}


@pytest.mark.anyio
async def test_the_mcp_dialect_negotiates_and_calls() -> None:
    async with TestClient(kit_app(), mcp=True) as client:
        assert client.speaks_mcp
        assert client.subprotocol == "mcp"
        assert client.server_info is not None
        assert client.server_info.name == "kit"
        names = [tool["name"] for tool in await client.list_tools()]
        assert names[:2] == ["add", "fail"]
        result = await client.call_tool("add", {"a": 1, "b": 2})
        assert not result.is_error
        assert result.value() == 3
        assert result.text == "3"
        assert await client.invoke_tool("echo", {"text": "hi"}) == "hi"


# Errors, exactly as the wire gives them


@pytest.mark.anyio
async def test_errors_are_those_a_socket_client_gets() -> None:
    app = kit_app()
    transport = WebSocketTransport(app, shutdown_grace=1, close_timeout=2)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("fail", {"reason": "x"}),  # the tool raised: -32000 with its message
        ("add", {"a": 1, "b": -1}),  # validation: -32602 with pydantic's findings
        ("add", {}),
        ("nope", {}),  # unknown tool
        ("wipe", {}),  # a scope, and no principal: -31001
    ]
    async with socket_client(transport) as wired, TestClient(transport) as kit:
        for tool, params in cases:
            expected = await failure_of(wired.invoke_tool(tool, params))
            assert await failure_of(kit.invoke_tool(tool, params)) == expected
    assert expected[:2] == (Unauthenticated, -31001)
    async with (
        socket_client(transport, mcp=True) as wired,
        TestClient(transport, mcp=True) as kit,
    ):
        for tool, params in cases:
            expected = await answer_of(wired.call_tool(tool, params))
            assert await answer_of(kit.call_tool(tool, params)) == expected
        assert (await kit.call_tool("fail", {"reason": "x"})).is_error
        assert expected[:2] == (Unauthenticated, -31001)


@pytest.mark.anyio
async def test_a_tool_exception_and_a_validation_error_reach_the_caller() -> None:
    async with TestClient(kit_app()) as client:
        with pytest.raises(ToolError, match="kaput: now") as failed:
            await client.invoke_tool("fail", {"reason": "now"})
        assert failed.value.code == -32000
        with pytest.raises(InvalidParams) as invalid:
            await client.invoke_tool("add", {"a": 1, "b": -1})
        assert [entry["loc"] for entry in invalid.value.data] == [["b"]]
        # The connection goes on after both.
        assert await client.invoke_tool("add", {"a": 1}) == 1


@pytest.mark.anyio
async def test_an_oversized_message_closes_with_1009_as_on_a_socket() -> None:
    transport = WebSocketTransport(kit_app(), limits=Limits(max_message_size=4096))
    big = {"text": "x" * 5000}
    async with socket_client(transport) as wired:
        expected = await failure_of(wired.invoke_tool("echo", big))
        assert wired.close_code == 1009
    async with TestClient(transport) as kit:
        assert await kit.invoke_tool("echo", {"text": "x" * 4000}) == "x" * 4000
        assert await failure_of(kit.invoke_tool("echo", big)) == expected
        assert kit.close_code == 1009
    assert expected[0] is ConnectionClosed


# Who connects


@pytest.mark.anyio
async def test_a_principal_gets_its_scopes_and_nothing_more() -> None:
    app = kit_app()
    async with TestClient(app, principal=ANN) as ann:
        assert await ann.invoke_tool("wipe") == "wiped"
        assert await ann.invoke_tool("whoami") == "ann"
    async with TestClient(app, principal=Principal("bob", frozenset({"reader"}))) as bob:
        with pytest.raises(Forbidden) as refused:
            await bob.invoke_tool("wipe")
        assert refused.value.data == {"required_scopes": ["admin"]}
        assert "wipe" not in [tool["name"] for tool in await bob.list_tools()]
    async with TestClient(app, principal=ANN, mcp=True) as ann_mcp:
        assert await ann_mcp.invoke_tool("wipe") == "wiped"


@pytest.mark.anyio
async def test_a_token_goes_through_the_transports_security_policy() -> None:
    transport = guarded_transport()
    async with TestClient(transport, token="good") as ann:
        assert await ann.invoke_tool("whoami") == "ann"
        assert await ann.invoke_tool("wipe") == "wiped"
    async with TestClient(transport, token="weak", token_in_subprotocol=True) as bob:
        assert bob.subprotocol is None  # the token entry is never echoed
        with pytest.raises(Forbidden):
            await bob.invoke_tool("wipe")
    for token in ("forged", None):
        with pytest.raises(HandshakeRejected) as rejected:
            async with TestClient(transport, token=token):
                pass
        assert rejected.value.status_code == 401
    # A principal needs no token, even where tokens are required.
    async with TestClient(transport, principal=Principal("cyd")) as cyd:
        assert await cyd.invoke_tool("whoami") == "cyd"


@dataclass(frozen=True, slots=True)
class NoRobots(SecurityPolicy):
    """A policy with a check of its own: no ``User-Agent: robot``."""

    def check_handshake(self, request: HandshakeRequest, *, now: float) -> HandshakeAccepted:
        if ("user-agent", "robot") in request.headers:
            raise HandshakeRefused(403, "no robots")
        return SecurityPolicy.check_handshake(self, request, now=now)


@pytest.mark.anyio
async def test_a_policys_own_checks_apply_to_a_principal_too() -> None:
    transport = WebSocketTransport(kit_app(), security=NoRobots())
    async with TestClient(transport, principal=ANN) as ann:
        assert await ann.invoke_tool("whoami") == "ann"
    with pytest.raises(HandshakeRejected) as refused:
        async with TestClient(transport, principal=ANN, headers={"User-Agent": "robot"}):
            pass
    assert refused.value.status_code == 403


@pytest.mark.anyio
async def test_two_tokens_are_refused_as_on_the_wire() -> None:
    transport = guarded_transport()
    twice = [("Authorization", "Bearer good"), ("Authorization", "Bearer weak")]
    async with serving(transport) as port:
        with pytest.raises(HandshakeRejected) as wired:
            async with WebSocketClient(f"ws://127.0.0.1:{port}", headers=twice):
                pass
    with pytest.raises(HandshakeRejected) as kit:
        async with TestClient(transport, headers=twice):
            pass
    assert kit.value.status_code == wired.value.status_code == 401
    assert kit.value.body == wired.value.body


@pytest.mark.anyio
async def test_the_policys_rate_limit_and_connection_caps_apply() -> None:
    transport = guarded_transport(
        rate_limiter=RateLimiter(rate=0.001, burst=2), max_connections_per_principal=1
    )
    async with TestClient(transport, principal=ANN) as ann:
        assert await ann.invoke_tool("add", {"a": 1}) == 1
        assert await ann.invoke_tool("add", {"a": 2}) == 2
        with pytest.raises(RateLimited) as limited:
            await ann.invoke_tool("add", {"a": 3})
        assert limited.value.data["retry_after"] > 0
        # The clients of one transport count together, as one server's connections.
        with pytest.raises(HandshakeRejected) as capped:
            async with TestClient(transport, token="good"):
                pass
        assert capped.value.status_code == 429
    # The cap counts open connections only; the rate limit counts the principal.
    async with TestClient(transport, token="good") as again:
        with pytest.raises(RateLimited):
            await again.invoke_tool("whoami")


@pytest.mark.anyio
async def test_an_expired_principal_is_closed_with_1008() -> None:
    expired = Principal("old", expires_at=time.time() - 1)
    async with TestClient(kit_app(), principal=expired) as client:
        with anyio.fail_after(WAIT):
            await client.wait_closed()
    assert client.close_code == 1008


# The pytest fixture


@pytest.mark.anyio
async def test_the_fixture_makes_test_clients(
    securemcp_client: Callable[..., TestClient],
) -> None:
    async with securemcp_client(kit_app(), principal=ANN) as client:
        assert isinstance(client, TestClient)
        assert await client.invoke_tool("wipe") == "wiped"
