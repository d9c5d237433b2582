"""What the tests of ``securemcp.testing.TestClient`` share: the kit app, a principal, both loops.

Their modules import ``anyio_backend`` from here: the test client serves
asyncio's protocol path whatever the transport, so two runs, not conftest's three.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import pytest
from pydantic import Field

from securemcp import (
    Context,
    Principal,
    Progress,
    SecureMCP,
    SecurityPolicy,
    StaticTokenAuthenticator,
)
from securemcp.transport import WebSocketTransport

WAIT = 10.0
ANN = Principal("ann", frozenset({"admin"}))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both event loops (the test client serves asyncio's protocol path whatever the transport)."""
    return str(request.param)


def kit_app() -> SecureMCP:
    """Tools for every behaviour a test of one's tools looks at."""
    app = SecureMCP("kit", "Tools for the test kit's tests.")

    @app.tool()
    def add(a: int, b: Annotated[int, Field(ge=0)] = 0) -> int:
        """Add two integers (b not negative)."""
        return a + b

    @app.tool()
    async def fail(reason: str) -> None:
        """Always raise."""
        await anyio.lowlevel.checkpoint()
        raise RuntimeError(f"kaput: {reason}")

    @app.tool(scopes={"admin"})
    async def wipe() -> str:
        """Only for admins."""
        return "wiped"

    @app.tool()
    async def whoami(ctx: Context) -> str | None:
        """The caller's subject (a tool that never awaits: answered in the read's pass)."""
        return None if ctx.principal is None else ctx.principal.subject

    @app.tool()
    async def clock() -> float:
        """The event loop's time, from a tool that never awaits."""
        return anyio.current_time()

    @app.tool()
    async def echo(text: str) -> str:
        """Give ``text`` back."""
        await anyio.lowlevel.checkpoint()
        return text

    @app.tool()
    async def join(room: str, ctx: Context) -> int:
        """Follow ``room``; how many follow it."""
        ctx.subscribe(room)
        return ctx.subscriber_count(room)

    @app.tool()
    async def say(room: str, text: str, ctx: Context) -> int:
        """Tell everyone in ``room``; how many heard it."""
        return ctx.publish(room, "room.said", {"room": room, "text": text})

    @app.tool()
    async def count(steps: int, progress: Progress) -> int:
        """Count to ``steps``, reporting each step."""
        for step in range(1, steps + 1):
            progress.report(step, steps, f"step {step}")
            await anyio.lowlevel.checkpoint()
        return steps

    @app.tool()
    def count_in_a_thread(steps: int, progress: Progress) -> int:
        """The same from a sync tool, which runs in a worker thread."""
        for step in range(1, steps + 1):
            progress.report(step, steps)
        return steps

    return app


def guarded_transport(**policy: Any) -> WebSocketTransport:
    """The kit app behind a token check: "good" is ann's token, "weak" bob's (no admin)."""
    tokens = StaticTokenAuthenticator({"good": ANN, "weak": Principal("bob")})
    return WebSocketTransport(kit_app(), security=SecurityPolicy(authenticator=tokens, **policy))
