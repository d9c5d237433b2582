"""The security policy's authentication and authorization, over real sockets on asyncio and trio.

The server is :class:`WebSocketTransport` with a :class:`SecurityPolicy`; the
client is :class:`WebSocketClient`, whose ``token=`` is under test as well.
Static tokens and JWTs, 401 before the upgrade, no token ever in the log; tool
scopes; a token expiring while connected; the client's token arguments. Rate
limits, connection caps, Origin checks and error hygiene are in
``test_security_backend_limits.py``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import anyio
import jwt
import pytest

from securemcp import SecurityPolicy
from securemcp.auth import JWTAuthenticator, Principal
from securemcp.errors import ConnectionClosed, Forbidden, RateLimited, Unauthenticated
from securemcp.ratelimit import RateLimiter
from securemcp.transport import WebSocketClient, WebSocketTransport

from .security_backend_helpers import (
    ADMIN_TOKEN,
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

SECRET = "jwt-secret-jwt-secret-jwt-secret-!!"  # 35 bytes: long enough for HS256


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every message, argument and formatted traceback that reached the log."""
    return caplog.text + "\n".join(record.getMessage() for record in caplog.records)


async def purge_as(policy: SecurityPolicy, token: str) -> str:
    """Connect with ``token`` and purge (an admin tool), which must run once; who the server saw."""
    record = Record()
    async with serving(quick(security_app(record), policy)) as url:
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url, token=token) as client:
                who: str = await client.invoke_tool("whoami")
                assert await client.invoke_tool("purge") == "purged"
    assert record.purged == 1
    return who


# Authentication


@pytest.mark.anyio
async def test_static_token_in_the_authorization_header() -> None:
    policy = SecurityPolicy(authenticator=static_tokens())
    assert await purge_as(policy, ADMIN_TOKEN) == "alice"


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
    policy = SecurityPolicy(authenticator=JWTAuthenticator(SECRET, audience="secure-app"))
    claims = {"sub": "dave", "scope": "admin", "aud": "secure-app", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert await purge_as(policy, token) == "dave"


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
