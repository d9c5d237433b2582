"""Every defence of the security policy, proved over real loopback sockets on asyncio and trio.

The server is :class:`WebSocketTransport` with a :class:`SecurityPolicy`; the
client is :class:`WebSocketClient`, whose ``token=`` is under test as well.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import jwt
import pytest

from securemcp import Context, SecureMCP, SecurityPolicy
from securemcp.auth import JWTAuthenticator, Principal, StaticTokenAuthenticator
from securemcp.errors import (
    ConnectionClosed,
    Forbidden,
    HandshakeRejected,
    InternalError,
    RateLimited,
    RPCError,
    ToolError,
    Unauthenticated,
)
from securemcp.origin import OriginPolicy
from securemcp.ratelimit import RateLimiter
from securemcp.transport import WebSocketClient, WebSocketTransport

TIMEOUT = 10.0
"""Bound of every test's network activity; generous, tests finish far sooner."""

ADMIN_TOKEN = "admin-token-7f3a9c2e5b"
USER_TOKEN = "user-token-41d8e07c6a"
SECRET = "jwt-secret-jwt-secret-jwt-secret-!!"  # 35 bytes: long enough for HS256
SECRET_DETAIL = "secret detail in /srv/app/vault.py"


class Record:
    """Side effects of the test tools, so a test can tell whether a tool ran."""

    def __init__(self) -> None:
        self.purged = 0
        self.cancelled = 0


def security_app(record: Record) -> SecureMCP:
    """An app with an unscoped tool, a scoped one, a context-reading one and failing ones."""
    app = SecureMCP("secure-app")

    @app.tool()
    async def echo(message: str) -> str:
        return message

    @app.tool()
    def whoami(ctx: Context) -> str:
        return "anonymous" if ctx.principal is None else ctx.principal.subject

    @app.tool(scopes={"admin"})
    def purge(everything: bool = False) -> str:
        record.purged += 1
        return "purged"

    @app.tool()
    async def wait_forever() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            record.cancelled += 1
            raise

    @app.tool()
    def boom() -> None:
        raise RuntimeError(SECRET_DETAIL)

    @app.tool()
    def opaque() -> object:
        return object()

    return app


def static_tokens(**principals: Principal) -> StaticTokenAuthenticator:
    """Alice (admin) and Bob (no scopes), plus ``principals`` keyed by token."""
    tokens: dict[str, Principal] = {
        ADMIN_TOKEN: Principal("alice", frozenset({"admin"})),
        USER_TOKEN: Principal("bob"),
        **principals,
    }
    return StaticTokenAuthenticator(tokens)


def quick(app: SecureMCP, security: SecurityPolicy | None = None) -> WebSocketTransport:
    """A transport whose shutdown never waits long for a misbehaving test."""
    return WebSocketTransport(app, security=security, shutdown_grace=2.0, close_timeout=2.0)


@asynccontextmanager
async def serving(transport: WebSocketTransport) -> AsyncIterator[str]:
    """Run ``transport`` on a free loopback port for the block; yields its URL."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        yield f"ws://127.0.0.1:{port}/"
        tg.cancel_scope.cancel()


async def wait_until_idle(transport: WebSocketTransport) -> None:
    """Wait until the server has finished every connection (and released what it held)."""
    # The transport offers no event for this; polling a condition is exact anyway.
    while transport.open_connections:  # noqa: ASYNC110
        await anyio.sleep(0.005)


async def refusal(url: str, **options: Any) -> HandshakeRejected:
    """Connect with ``options`` and return the server's refusal (fails if it accepts)."""
    with pytest.raises(HandshakeRejected) as refused:
        async with WebSocketClient(url, **options):
            pass
    return refused.value


async def outcome(client: WebSocketClient, tool: str, arguments: dict[str, Any]) -> Any:
    """What a call returned, or the RPCError it raised."""
    try:
        return await client.invoke_tool(tool, arguments)
    except RPCError as exc:
        return exc


def logged(caplog: pytest.LogCaptureFixture, logger: str = "securemcp.security") -> list[str]:
    """The messages ``logger`` emitted."""
    return [record.getMessage() for record in caplog.records if record.name == logger]


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every message, argument and formatted traceback that reached the log."""
    return caplog.text + "\n".join(record.getMessage() for record in caplog.records)


@pytest.fixture(autouse=True)
def _security_events(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the INFO-level security events (expiry closes, rate-limited calls) too."""
    caplog.set_level(logging.INFO, logger="securemcp.security")


# Authentication


@pytest.mark.anyio
async def test_static_token_in_the_authorization_header() -> None:
    record = Record()
    policy = SecurityPolicy(authenticator=static_tokens())
    async with serving(quick(security_app(record), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=ADMIN_TOKEN) as client:
                assert await client.invoke_tool("whoami") == "alice"
                assert await client.invoke_tool("purge") == "purged"
    assert record.purged == 1


@pytest.mark.anyio
async def test_static_token_in_the_subprotocol_list_is_never_echoed() -> None:
    policy = SecurityPolicy(authenticator=static_tokens())
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=USER_TOKEN, token_in_subprotocol=True) as client:
                assert await client.invoke_tool("whoami") == "bob"
                # The only subprotocol offered was the token: the server chose none.
                assert client.subprotocol is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "reason", "challenge"),
    [
        ({}, "missing credentials", 'Bearer realm="securemcp"'),
        ({"token": "wrong-token-0000"}, "unknown token", 'error="invalid_token"'),
        (
            {"token": "wrong-token-0000", "token_in_subprotocol": True},
            "unknown token",
            'error="invalid_token"',
        ),
        (
            {"headers": {"Authorization": "Basic d3Jvbmc6dG9rZW4="}},
            "malformed Authorization header",
            'error="invalid_request"',
        ),
    ],
)
async def test_missing_or_wrong_credentials_get_401_before_the_upgrade(
    options: dict[str, Any], reason: str, challenge: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    policy = SecurityPolicy(authenticator=static_tokens())
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            refused = await refusal(url, **options)
    assert refused.status_code == 401
    authenticate = refused.header("WWW-Authenticate")
    assert authenticate is not None
    assert authenticate.startswith('Bearer realm="securemcp"')
    assert challenge in authenticate
    assert refused.body.decode().startswith(reason)
    assert any(f"refused: HTTP 401 {reason}" in line for line in logged(caplog))
    assert "wrong-token-0000" not in all_log_text(caplog)


@pytest.mark.anyio
async def test_jwt_hs256_valid_token_connects_and_carries_its_scopes() -> None:
    record = Record()
    policy = SecurityPolicy(authenticator=JWTAuthenticator(SECRET, audience="secure-app"))
    claims = {"sub": "dave", "scope": "admin", "aud": "secure-app", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    async with serving(quick(security_app(record), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=token) as client:
                assert await client.invoke_tool("whoami") == "dave"
                assert await client.invoke_tool("purge") == "purged"
    assert record.purged == 1


@pytest.mark.anyio
async def test_jwt_expired_token_gets_401(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    policy = SecurityPolicy(authenticator=JWTAuthenticator(SECRET))
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            refused = await refusal(url, token=token)
    assert refused.status_code == 401
    assert refused.header("www-authenticate") == 'Bearer realm="securemcp", error="invalid_token"'
    assert refused.body == b"expired token\n"
    assert token not in all_log_text(caplog)


@pytest.mark.anyio
async def test_a_failing_authenticator_refuses_with_500_and_logs_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def authenticate(self, token: str, *, now: float) -> Principal:
            raise KeyError(token)

    policy = SecurityPolicy(authenticator=Broken())
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            refused = await refusal(url, token=ADMIN_TOKEN)
    assert refused.status_code == 500
    assert ADMIN_TOKEN.encode() not in refused.body
    assert any("the authenticator raised KeyError" in line for line in logged(caplog))
    assert ADMIN_TOKEN not in all_log_text(caplog)


@pytest.mark.anyio
async def test_no_token_ever_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    expiring = "expiring-token-93be0d"
    policy = SecurityPolicy(
        authenticator=static_tokens(**{expiring: Principal("erin", expires_at=time.time() + 0.5)}),
        rate_limiter=RateLimiter(rate=1, burst=1),
    )
    app = security_app(Record())
    transport = quick(app, policy)
    async with serving(transport) as url:
        with anyio.fail_after(TIMEOUT):
            # Erin first: her token lives only half a second.
            async with WebSocketClient(url, token=expiring) as erin:
                async with WebSocketClient(url, token=ADMIN_TOKEN) as client:
                    await client.invoke_tool("echo", {"message": "hi"})
                    with pytest.raises(RateLimited):
                        await client.invoke_tool("echo", {"message": "again"})
                async with WebSocketClient(
                    url, token=USER_TOKEN, token_in_subprotocol=True
                ) as client:
                    with pytest.raises(Forbidden):
                        await client.invoke_tool("purge")
                await refusal(url, token=USER_TOKEN + "x")
                await erin.wait_closed()
            await wait_until_idle(transport)
    # Every kind of security event was logged, and none of them holds a token.
    events = "\n".join(logged(caplog))
    for what in ("rate limited", "refused (-31003", "expired", "refused: HTTP 401"):
        assert what in events
    text = all_log_text(caplog)
    for token in (ADMIN_TOKEN, USER_TOKEN, expiring):
        assert token not in text


# Authorization


@pytest.mark.anyio
async def test_anonymous_connection_calls_unscoped_tools_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = Record()
    policy = SecurityPolicy(authenticator=static_tokens(), allow_anonymous=True)
    async with serving(quick(security_app(record), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url) as client:
                assert await client.invoke_tool("whoami") == "anonymous"
                assert await client.invoke_tool("echo", {"message": "hi"}) == "hi"
                with pytest.raises(Unauthenticated) as refused:
                    await client.invoke_tool("purge")
                assert refused.value.code == -31001
                names = [tool["name"] for tool in await client.list_tools()]
                assert client.welcome is not None
                greeted = client.welcome.tools
    assert record.purged == 0
    assert "purge" not in names
    assert "purge" not in greeted
    assert "echo" in names
    assert any("'purge' refused (-31001" in line for line in logged(caplog))


@pytest.mark.anyio
async def test_principal_without_the_scope_is_forbidden_and_the_tool_does_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = Record()
    policy = SecurityPolicy(authenticator=static_tokens())
    async with serving(quick(security_app(record), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=USER_TOKEN) as client:
                with pytest.raises(Forbidden) as refused:
                    # Refused before validation: a bad argument changes nothing.
                    await client.invoke_tool("purge", {"everything": "not a bool"})
                assert refused.value.code == -31003
                assert refused.value.data == {"required_scopes": ["admin"]}
                assert await client.invoke_tool("echo", {"message": "still here"}) == "still here"
    assert record.purged == 0
    assert any("'purge' refused (-31003 Insufficient scope) for bob" in m for m in logged(caplog))


@pytest.mark.anyio
async def test_list_tools_shows_each_principal_only_what_it_may_call() -> None:
    policy = SecurityPolicy(authenticator=static_tokens())
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=USER_TOKEN) as user:
                user_tools = {tool["name"] for tool in await user.list_tools()}
            async with WebSocketClient(url, token=ADMIN_TOKEN) as admin:
                admin_tools = {tool["name"] for tool in await admin.list_tools()}
    assert admin_tools - user_tools == {"purge"}
    assert "whoami" in user_tools


# Expiry while connected


@pytest.mark.anyio
async def test_token_expiring_while_connected_closes_1008_and_cancels_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = Record()
    token = "short-lived-token-5e1f"
    lifetime = 0.5
    authenticator = static_tokens(**{token: Principal("carol", expires_at=time.time() + lifetime)})
    transport = quick(security_app(record), SecurityPolicy(authenticator=authenticator))
    async with serving(transport) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=token) as client:
                assert await client.invoke_tool("whoami") == "carol"
                with pytest.raises(ConnectionClosed) as closed:
                    await client.invoke_tool("wait_forever", timeout=None)
                assert closed.value.close_code == 1008
                assert (client.close_code, client.close_reason) == (1008, "token expired")
            await wait_until_idle(transport)
    assert record.cancelled == 1
    assert any("credentials of carol expired" in line for line in logged(caplog))


@pytest.mark.anyio
@pytest.mark.parametrize("expires_at", [math.nan, math.inf])
async def test_odd_expiry_times_fail_closed_or_never_expire(expires_at: float) -> None:
    class Odd:
        def authenticate(self, token: str, *, now: float) -> Principal:
            return Principal("odd", expires_at=expires_at)

    policy = SecurityPolicy(authenticator=Odd())
    async with serving(quick(security_app(Record()), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=USER_TOKEN) as client:
                if math.isnan(expires_at):
                    await client.wait_closed()
                    assert client.close_code == 1008
                else:
                    assert await client.invoke_tool("whoami") == "odd"
                    assert client.close_code is None


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


# Client arguments


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"token": "has space"}, ValueError, "bearer token may contain only"),
        ({"token": "a/b=", "token_in_subprotocol": True}, ValueError, "subprotocol may contain"),
        ({"token_in_subprotocol": True}, ValueError, "needs a token"),
        ({"token": "abc", "headers": {"authorization": "Bearer x"}}, ValueError, "given twice"),
        ({"token": "abc", "subprotocols": ["bearer.x"]}, ValueError, "given twice"),
        ({"token": b"abc"}, TypeError, "must be a string"),
    ],
)
def test_bad_token_arguments_are_refused_without_quoting_the_token(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as refused:
        WebSocketClient("ws://127.0.0.1:1/", **options)
    token = options.get("token")
    assert not isinstance(token, str) or token not in str(refused.value)


def test_the_token_never_goes_into_the_url() -> None:
    client = WebSocketClient("ws://127.0.0.1:1/mcp?x=1", token=ADMIN_TOKEN)
    assert ADMIN_TOKEN not in client.url
    assert ADMIN_TOKEN not in repr(client)


def test_security_must_be_a_policy() -> None:
    with pytest.raises(TypeError, match="SecurityPolicy"):
        WebSocketTransport(security_app(Record()), security={"mask_errors": True})  # type: ignore[arg-type]
