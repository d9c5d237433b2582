"""The security policy's rate limits, connection caps, Origin checks and error hygiene.

Over real loopback sockets on asyncio and trio, with :class:`WebSocketTransport`
and :class:`WebSocketClient`: -31029 with ``retry_after`` per principal across
connections, 429 past the per-address and per-principal caps, 403 for a
foreign or missing Origin, masked errors with a correlation id logged once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest

from securemcp import SecurityPolicy
from securemcp.errors import InternalError, RateLimited, RPCError, ToolError
from securemcp.origin import OriginPolicy
from securemcp.ratelimit import RateLimiter
from securemcp.transport import WebSocketClient

from .security_backend_helpers import (
    ADMIN_TOKEN,
    SECRET_DETAIL,
    TIMEOUT,
    USER_TOKEN,
    Record,
    _security_events,  # noqa: F401 - the autouse fixture
    logged,
    quick,
    refusal,
    security_app,
    serving,
    static_tokens,
    wait_until_idle,
)


async def outcome(client: WebSocketClient, tool: str, arguments: dict[str, Any]) -> Any:
    """What a call returned, or the RPCError it raised."""
    try:
        return await client.invoke_tool(tool, arguments)
    except RPCError as exc:
        return exc


# Rate limiting


@pytest.mark.anyio
async def test_rate_limit_answers_31029_with_retry_after_and_the_retry_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 10 per second: a refused call waits about 0.1 s, and the burst of four
    # calls below would need that long between its first and last to pass.
    limiter = RateLimiter(rate=10, burst=3)
    policy = SecurityPolicy(authenticator=static_tokens(), rate_limiter=limiter)
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=USER_TOKEN) as client:
                outcomes: list[Any] = []

                async def call(index: int) -> None:
                    outcomes.append(await outcome(client, "echo", {"message": str(index)}))

                async with anyio.create_task_group() as tg:
                    for index in range(4):
                        tg.start_soon(call, index)
                limited = [item for item in outcomes if isinstance(item, RPCError)]
                assert len(limited) == 1, outcomes
                refusal = limited[0]
                assert isinstance(refusal, RateLimited)
                assert refusal.code == -31029
                retry_after = refusal.data["retry_after"]
                assert 0 < retry_after <= 0.1
                # The refusal tells the truth: waiting that long is enough.
                await anyio.sleep(retry_after)
                assert await client.invoke_tool("echo", {"message": "later"}) == "later"
    assert any("by bob rate limited" in line for line in logged(caplog))


@pytest.mark.anyio
async def test_rate_limit_buckets_follow_the_principal_across_connections() -> None:
    limiter = RateLimiter(rate=0.01, burst=2)
    policy = SecurityPolicy(
        authenticator=static_tokens(), allow_anonymous=True, rate_limiter=limiter
    )
    transport = quick(security_app(Record()), policy)
    async with serving(transport) as url:
        with anyio.fail_after(TIMEOUT):
            async with (
                WebSocketClient(url, token=USER_TOKEN) as first,
                WebSocketClient(url, token=USER_TOKEN) as second,
            ):
                assert await first.invoke_tool("echo", {"message": "1"}) == "1"
                assert await second.invoke_tool("echo", {"message": "2"}) == "2"
                # Bob's two connections share one bucket, now empty.
                with pytest.raises(RateLimited):
                    await first.invoke_tool("echo", {"message": "3"})
                with pytest.raises(RateLimited):
                    await second.invoke_tool("echo", {"message": "3"})
            # Anonymous connections each get their own bucket...
            for _ in range(2):
                async with WebSocketClient(url) as anonymous:
                    for message in ("a", "b"):
                        assert await anonymous.invoke_tool("echo", {"message": message}) == message
                    with pytest.raises(RateLimited):
                        await anonymous.invoke_tool("echo", {"message": "c"})
            await wait_until_idle(transport)
    # ...forgotten once the connection is over: only Bob's bucket is kept.
    assert len(limiter) == 1


# Connection caps


@pytest.mark.anyio
async def test_per_address_cap_refuses_the_third_connection_with_429() -> None:
    transport = quick(security_app(Record()), SecurityPolicy(max_connections_per_address=2))
    async with serving(transport) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url) as first, WebSocketClient(url):
                refused = await refusal(url)
                assert refused.status_code == 429
                assert refused.body == b"too many connections from this address\n"
                assert await first.invoke_tool("echo", {"message": "ok"}) == "ok"
            # Closing gives the slots back.
            await wait_until_idle(transport)
            async with WebSocketClient(url) as again, WebSocketClient(url):
                assert await again.invoke_tool("echo", {"message": "back"}) == "back"


@pytest.mark.anyio
async def test_per_principal_cap_refuses_with_429_and_spares_other_principals() -> None:
    policy = SecurityPolicy(
        authenticator=static_tokens(),
        max_connections_per_principal=1,
        max_connections_per_address=2,
    )
    transport = quick(security_app(Record()), policy)
    guard = transport._settings.guard
    async with serving(transport) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=USER_TOKEN):
                refused = await refusal(url, token=USER_TOKEN)
                assert refused.status_code == 429
                assert refused.body == b"too many connections for this principal\n"
                # The refused connection gave its address slot back at once.
                assert guard.open_for_address("127.0.0.1") == 1
                async with WebSocketClient(url, token=ADMIN_TOKEN) as admin:
                    assert await admin.invoke_tool("whoami") == "alice"
            await wait_until_idle(transport)
            assert guard.open_for_principal("bob") == 0
            assert guard.open_for_address("127.0.0.1") == 0
            async with WebSocketClient(url, token=USER_TOKEN) as user:
                assert await user.invoke_tool("whoami") == "bob"


# Origin


@pytest.mark.anyio
async def test_origin_allowlist() -> None:
    allowed = SecurityPolicy(origins=OriginPolicy(["https://app.example"]))
    async with serving(quick(security_app(Record()), allowed)) as url:
        with anyio.fail_after(TIMEOUT):
            refused = await refusal(url, headers={"Origin": "https://evil.example"})
            assert refused.status_code == 403
            refused = await refusal(url, headers={"Origin": "https://app.example.evil.example"})
            assert refused.status_code == 403
            async with WebSocketClient(url, headers={"Origin": "https://app.example"}) as client:
                assert await client.invoke_tool("echo", {"message": "hi"}) == "hi"
            # Programs send no Origin: allowed unless the policy says otherwise.
            async with WebSocketClient(url) as client:
                assert await client.invoke_tool("echo", {"message": "hi"}) == "hi"


@pytest.mark.anyio
async def test_missing_origin_refused_when_required() -> None:
    strict = SecurityPolicy(origins=OriginPolicy(["https://app.example"], allow_missing=False))
    async with serving(quick(security_app(Record()), strict)) as url:
        with anyio.fail_after(TIMEOUT):
            refused = await refusal(url)
            assert refused.status_code == 403
            assert refused.body == b"origin not allowed\n"
            async with WebSocketClient(url, headers={"Origin": "https://app.example"}) as client:
                assert await client.invoke_tool("echo", {"message": "hi"}) == "hi"


@pytest.mark.anyio
async def test_the_default_policy_lets_any_origin_in_anonymously() -> None:
    async with serving(quick(security_app(Record()))) as url:
        with anyio.fail_after(TIMEOUT):
            headers = {"Origin": "https://anywhere.example"}
            async with WebSocketClient(url, headers=headers) as client:
                assert await client.invoke_tool("whoami") == "anonymous"


# Error hygiene


def wire_text(error: RPCError) -> str:
    """Everything an error answer carried on the wire: its code, message and data."""
    return json.dumps({"code": error.code, "message": error.message, "data": error.data})


@pytest.mark.anyio
async def test_masked_tool_error_shows_a_correlation_id_logged_once_with_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = SecurityPolicy(mask_errors=True)
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url) as client:
                with pytest.raises(ToolError) as failed:
                    await client.invoke_tool("boom")
    error = failed.value
    assert (error.code, error.message) == (-32000, "Tool execution error")
    correlation = error.data["correlation_id"]
    for leak in ("RuntimeError", "Traceback", "secret", "/srv", ".py"):
        assert leak not in wire_text(error)
    # Logged exactly once (by the core, not again by the backend), traceback included.
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert correlation in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert SECRET_DETAIL in caplog.text


@pytest.mark.anyio
async def test_unserialisable_result_is_an_internal_error_with_a_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(quick(security_app(Record()))) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url) as client:
                with pytest.raises(InternalError) as failed:
                    await client.invoke_tool("opaque")
                # The connection is still fine.
                assert await client.invoke_tool("echo", {"message": "ok"}) == "ok"
    error = failed.value
    assert (error.code, error.message) == (-32603, "Internal error")
    assert set(error.data) == {"correlation_id"}
    for leak in ("object", "Serializ", "Traceback", ".py"):
        assert leak not in wire_text(error)
    assert any(error.data["correlation_id"] in record.getMessage() for record in caplog.records)
