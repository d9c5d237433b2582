"""What the tests of the security policy over sockets share: the app, the tokens, the server.

An app with scoped and failing tools recording what ran, Alice's and Bob's
tokens, a transport served on a loopback port, the refusal a client gets, and
the security log (``_security_events``, an autouse fixture the modules import).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from securemcp import Context, SecureMCP, SecurityPolicy
from securemcp.auth import Principal, StaticTokenAuthenticator
from securemcp.errors import HandshakeRejected
from securemcp.transport import WebSocketClient, WebSocketTransport

TIMEOUT = 10.0
"""Bound of every test's network activity; generous, tests finish far sooner."""

ADMIN_TOKEN = "admin-token-7f3a9c2e5b"
USER_TOKEN = "user-token-41d8e07c6a"
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


def logged(caplog: pytest.LogCaptureFixture, logger: str = "securemcp.security") -> list[str]:
    """The messages ``logger`` emitted."""
    return [record.getMessage() for record in caplog.records if record.name == logger]


@pytest.fixture(autouse=True)
def _security_events(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the INFO-level security events (expiry closes, rate-limited calls) too."""
    caplog.set_level(logging.INFO, logger="securemcp.security")
