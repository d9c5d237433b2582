"""What the MCP interop tests share: our server (asyncio or trio, in a thread) and its tools.

``our_server`` is a fixture the modules import (as ``our_server_fixture``);
the tools cover nested arguments, errors, progress from a worker thread and a
call that waits to be cancelled, recording the cancellations for the test's
thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest
from anyio.from_thread import start_blocking_portal
from pydantic import BaseModel

from securemcp import Context, Progress, SecureMCP
from securemcp.transport import WebSocketTransport

LIMIT = 20
"""Seconds any one test may take on the network before it is a failure."""

UNICODE = "héllo wörld ✓ 🌍 \u202e مرحبا"


class Address(BaseModel):
    city: str
    tags: list[str]


class Person(BaseModel):
    name: str
    address: Address


@dataclass
class Cancellations:
    """What the server's blocking tool saw, shared with the test's thread."""

    ids: list[str | int] = field(default_factory=list)
    seen: threading.Event = field(default_factory=threading.Event)


# Tools the negotiation tests register too.


async def echo(message: str) -> dict[str, str]:
    """Echo a message back."""
    await anyio.lowlevel.checkpoint()
    return {"echoed": message}


def fail() -> None:
    """Always fails."""
    raise RuntimeError("nope")


def count(n: int, progress: Progress) -> int:
    """Report progress n times from a worker thread, then return n."""
    for step in range(1, n + 1):
        progress.report(step, n, f"step {step}")
    return n


def interop_app(cancellations: Cancellations) -> SecureMCP:
    app = SecureMCP("interop", "Tools for interop tests.", version="1.2.3")

    app.tool(title="Echo", annotations={"readOnlyHint": True})(echo)

    @app.tool()
    def describe(person: Person) -> str:
        """Describe a person (nested arguments)."""
        return f"{person.name} lives in {person.address.city} ({', '.join(person.address.tags)})"

    @app.tool()
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        await anyio.lowlevel.checkpoint()
        return a + b

    app.tool()(fail)
    app.tool()(count)

    @app.tool()
    async def block(progress: Progress, ctx: Context) -> None:
        """Announce the call's id as progress, then wait until cancelled."""
        progress.report(1, message=json.dumps(ctx.request_id))
        try:
            await anyio.sleep_forever()
        finally:
            cancellations.ids.append(ctx.request_id)
            cancellations.seen.set()

    @app.tool()
    def cancelled() -> list[str | int]:
        """The ids of the cancelled ``block`` calls, once there is one (5 s at most)."""
        cancellations.seen.wait(5)
        return cancellations.ids

    return app


@dataclass
class RunningServer:
    url: str
    cancellations: Cancellations


# Named apart from the fixture so that the tests' parameter does not shadow the import.
@pytest.fixture(params=["asyncio", "trio"], name="our_server")
def our_server_fixture(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Our server on its own event loop (asyncio or trio) in a thread."""
    cancellations = Cancellations()
    transport = WebSocketTransport(interop_app(cancellations), ping_interval=None)
    with start_blocking_portal(request.param) as portal:
        future, port = portal.start_task(transport.serve, "127.0.0.1", 0)
        try:
            yield RunningServer(f"ws://127.0.0.1:{port}/mcp", cancellations)
        finally:
            portal.call(transport.shutdown)
            future.result(timeout=LIMIT)
