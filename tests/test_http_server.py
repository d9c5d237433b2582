"""MCP Streamable HTTP served by ``WebSocketTransport`` on its own port (``mcp_path``): clients,
security, failures.

Clients: the official SDK 2.x client (``tests/sdk2_http_client.py``, run by the
SDK 2.x environment's interpreter), our :class:`~securemcp.transport.HTTPClient`,
and raw bytes where a hostile peer is needed. Every async test runs on asyncio,
trio and asyncio's anyio path, each network wait bounded. The protocol's
answers and hostile inputs: ``test_http_server_protocol.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from securemcp import (
    Principal,
    RPCError,
    SecureMCP,
    SecurityPolicy,
    StaticTokenAuthenticator,
)
from securemcp.backends.mcp_client import ProgressUpdate
from securemcp.origin import OriginPolicy
from securemcp.protocol import HandshakeRequest
from securemcp.ratelimit import RateLimiter
from securemcp.security import HandshakeAccepted, HandshakeRefused
from securemcp.transport import HTTPClient, HTTPRejected

from .helpers import serving
from .http_helpers import (
    ADMIN,
    LIMIT,
    MODERN,
    USER,
    one,
    post,
    raw,
    rpc,
    sdk_client,
    token_policy,
    transport,
)

# The official SDK 2.x client


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_lists_and_calls(mcp2_python: Path, mode: str) -> None:
    args = ("--legacy",) if mode == "legacy" else ()
    async with serving(transport()) as port:
        with anyio.fail_after(LIMIT + 10):
            out = await sdk_client(mcp2_python, f"http://127.0.0.1:{port}/mcp", *args)
    assert out["protocol_version"] == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert out["tools"] == ["add", "count", "echo", "forecast", "hang"]
    assert out["echo"] == {"text": "héllo ✓", "isError": False}
    # At 2026-07-28 with Mcp-Param-Region (checked against the body), at 2025-11-25 without.
    assert out["forecast"] == {"text": "Zürich: 1 day(s) of sun", "isError": False}
    assert out["added"] == {"text": "5", "isError": False}
    assert out["bad"]["isError"]
    assert "valid integer" in out["bad"]["text"]
    assert "Unknown tool: nope" in json.dumps(out["unknown"])
    assert out["count"] == {"text": "counted 3", "isError": False}
    assert out["progress"] == [[i, 3, f"step {i}"] for i in (1, 2, 3)]


# Our HTTPClient


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_our_client_lists_calls_and_sees_progress(protocol: Any) -> None:
    seen: list[ProgressUpdate] = []
    async with serving(transport()) as port:
        with anyio.fail_after(LIMIT):
            url = f"http://127.0.0.1:{port}/mcp"
            async with HTTPClient(url, protocol=protocol) as client:
                tools = await client.list_tools()
                echoed = await client.call_tool("echo", {"message": "hi"})
                assert await client.invoke_tool("add", {"a": 2, "b": 40}) == 42
                bad = await client.call_tool("add", {"a": "x", "b": 1})
                counted = await client.call_tool("count", {"steps": 3}, on_progress=seen.append)
                quiet = await client.call_tool("count", {"steps": 2})
                # Listed: at 2026-07-28 the client mirrors region as Mcp-Param-Region.
                forecast = await client.call_tool("forecast", {"region": "Zürich", "days": 3})
                stateless, version = client.stateless, client.protocol_version
    assert {tool["name"] for tool in tools} == {"echo", "add", "count", "forecast", "hang"}
    assert forecast.text == "Zürich: 3 day(s) of sun"
    assert echoed.text == "hi"
    assert bad.is_error
    assert "valid integer" in bad.text
    assert counted.text == "counted 3"
    assert seen == [ProgressUpdate(i, 3, f"step {i}") for i in (1, 2, 3)]
    assert quiet.text == "counted 2"
    assert stateless == (protocol == "auto")
    assert version == ("2026-07-28" if protocol == "auto" else "2025-11-25")


@pytest.mark.anyio
async def test_auth_is_refused_without_and_accepted_with_a_token() -> None:
    async with serving(transport(security=token_policy())) as port:
        with anyio.fail_after(LIMIT):
            url = f"http://127.0.0.1:{port}/mcp"
            refused = await one(port, post(rpc("server/discover", _meta=MODERN)))
            assert refused.status == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            bad = await one(port, post(rpc("tools/list"), "Authorization: Bearer wrong\r\n"))
            assert bad.status == 401
            with pytest.raises(HTTPRejected) as rejected:
                async with HTTPClient(url) as client:
                    await client.list_tools()
            assert rejected.value.status_code == 401
            async with HTTPClient(url, token=ADMIN) as client:
                assert await client.invoke_tool("purge") == "purged"
            async with HTTPClient(url, token=USER) as client:
                names = {tool["name"] for tool in await client.list_tools()}
                assert "purge" not in names  # bob lacks the scope: it is not listed
                denied = await one(
                    port,
                    post(
                        rpc("tools/call", name="purge", _meta=MODERN),
                        f"Authorization: Bearer {USER}\r\n",
                    ),
                )
    assert denied.status == 200
    assert denied.json()["error"]["code"] == -31003  # Insufficient scope, as on the WebSocket


@pytest.mark.anyio
async def test_a_refused_origin_gets_403_and_rate_limits_apply() -> None:
    policy = SecurityPolicy(
        origins=OriginPolicy(["https://app.example"]), rate_limiter=RateLimiter(rate=0.01, burst=2)
    )
    async with serving(transport(security=policy)) as port:
        with anyio.fail_after(LIMIT):
            origin = await one(port, post(rpc("tools/list"), "Origin: https://evil.example\r\n"))
            assert origin.status == 403
            call = post(rpc("tools/call", name="echo", arguments={"message": "x"}, _meta=MODERN))
            async with raw(port) as client:
                await client.stream.send(call * 3)
                answers = [(await client.answer()).json() for _ in range(3)]
    assert [a.get("result", {}).get("content") for a in answers[:2]] == [
        [{"type": "text", "text": "x"}]
    ] * 2
    assert answers[2]["error"]["code"] == -31029


@pytest.mark.anyio
async def test_a_policy_that_overrides_check_handshake_judges_http_requests_too() -> None:
    """Admission skips the handshake object for the stock policy, never for a subclass's rules."""
    seen: list[tuple[str, str]] = []

    class TenantPolicy(SecurityPolicy):
        def check_handshake(self, request: HandshakeRequest, *, now: float) -> HandshakeAccepted:
            seen.append((request.path, request.host))
            if request.header("x-tenant") != "acme":
                raise HandshakeRefused(403, "tenant required")
            return HandshakeAccepted(Principal("acme-user", frozenset()), ())

    async with serving(transport(security=TenantPolicy())) as port:
        with anyio.fail_after(LIMIT):
            refused = await one(port, post(rpc("tools/list", _meta=MODERN)))
            listed = await one(port, post(rpc("tools/list", _meta=MODERN), "X-Tenant: acme\r\n"))
    assert refused.status == 403
    assert refused.json()["error"]["message"] == "Tenant required (HTTP 403)"
    assert listed.status == 200
    assert [tool["name"] for tool in listed.json()["result"]["tools"]][:1] == ["echo"]
    assert seen == [("/mcp", "127.0.0.1")] * 2


@pytest.mark.anyio
async def test_anonymous_requests_share_their_address_budget_across_connections() -> None:
    """A new connection per request is no way around the rate limit (nor is closing one)."""
    policy = SecurityPolicy(rate_limiter=RateLimiter(rate=0.01, burst=2))
    call = post(rpc("tools/call", name="echo", arguments={"message": "x"}, _meta=MODERN))
    async with serving(transport(security=policy)) as port:
        with anyio.fail_after(LIMIT):
            answers = [(await one(port, call)).json() for _ in range(3)]
    assert [a.get("result", {}).get("isError") for a in answers[:2]] == [False, False]
    assert answers[2]["error"]["code"] == -31029
    assert answers[2]["error"]["data"]["retry_after"] > 0


def failing_app() -> SecureMCP:
    app = SecureMCP("failing")

    @app.tool()
    def boom() -> None:
        raise RuntimeError("kaput")

    @app.tool()
    async def inline_boom() -> None:
        raise RuntimeError("kaput inline")

    @app.tool()
    def opaque() -> object:
        return object()

    @app.tool()
    def teapot() -> None:
        raise RPCError("teapot", code=-31418)

    return app


async def call_result(port: int, name: str) -> dict[str, Any]:
    answer = await one(port, post(rpc("tools/call", name=name, _meta=MODERN)))
    assert answer.status == 200
    message: dict[str, Any] = answer.json()
    return message


@pytest.mark.anyio
@pytest.mark.parametrize("masked", [False, True])
async def test_tool_failures_are_answered_as_on_the_websocket(masked: bool) -> None:
    policy = SecurityPolicy(mask_errors=masked)
    async with serving(transport(failing_app(), security=policy)) as port:
        with anyio.fail_after(LIMIT):
            boom = await call_result(port, "boom")
            inline = await call_result(port, "inline_boom")
            opaque = await call_result(port, "opaque")
            teapot = await call_result(port, "teapot")
    for result in (boom, inline):
        assert result["result"]["isError"]
        assert result["result"]["resultType"] == "complete"
        text = result["result"]["content"][0]["text"]
        assert ("kaput" in text) != masked
        assert ("correlation id" in text) == masked
    assert opaque["error"]["code"] == -32603
    assert teapot["error"] == {"code": -31418, "message": "teapot"}


@pytest.mark.anyio
async def test_a_failing_authenticator_gets_500_and_a_full_server_503() -> None:
    class Broken(StaticTokenAuthenticator):
        def authenticate(self, token: str, *, now: float) -> Principal:
            raise RuntimeError(token)

    broken = SecurityPolicy(authenticator=Broken({}))
    async with serving(transport(security=broken)) as port:
        with anyio.fail_after(LIMIT):
            answer = await one(port, post(rpc("tools/list"), "Authorization: Bearer t0k3n\r\n"))
    assert (answer.status, answer.body) == (500, b"authentication failed\n")
    async with serving(transport(max_connections=1)) as port:
        with anyio.fail_after(LIMIT):
            async with raw(port) as first:
                await first.stream.send(post(rpc("tools/list", _meta=MODERN)))
                assert (await first.answer()).status == 200
                refused = await one(port, post(rpc("tools/list", _meta=MODERN)))
    assert refused.status == 503
