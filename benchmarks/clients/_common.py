"""The C1 closed loop every client runner shares: one connection, N calls in flight, one JSON line.

Each runner in this directory says only how its client library connects and
makes one echo call; this runs ``--depth`` tasks over that one connection,
each sending its next call as soon as its previous answer is back, checks
every answer (``{"echoed": <the message sent>}``, else an error), and prints
the figures of the window (``window.measure``: calls/s, p50/p99, CPU of the
client process and of the server) as one JSON line. The loop runs on anyio,
so that the same code drives asyncio, asyncio with uvloop and trio; anyio
only starts the tasks and sleeps, each call is the client's own code.

Runners import this as ``_common`` from their own directory, and this finds
``benchmarks/window.py`` one directory up. Standard library and anyio only:
it runs in the project's environment and in the peers' (which has anyio
through the MCP SDK).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from benchmarks.window import Stats, measure
else:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from window import Stats, measure

MESSAGE = "hello from the benchmark"
"""The text every call echoes (as the load generator's S1)."""

Call = Callable[[dict[str, str]], Awaitable[Any]]
"""One echo call: the tool's arguments in, the tool's result out."""

Connect = Callable[[str], AbstractAsyncContextManager[Call]]
"""Open a connection to a URL for as long as the context lasts; yields its echo call."""

LOOPS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}
"""Event loop name -> anyio backend and its options."""


def invoking(
    client_class: Callable[[str], AbstractAsyncContextManager[Any]],
) -> Connect:
    """The ``Connect`` of a client whose ``invoke_tool(name, params)`` makes a call.

    SecureMCP's ``WebSocketClient`` and nextmcp's both take a URL, work as an
    async context manager, and call a tool with ``invoke_tool``.
    """

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Call]:
        async with client_class(url) as client:
            yield functools.partial(client.invoke_tool, "echo")

    return connect


DRAIN = 5.0
"""Seconds the calls in flight get to land after the window before they are cancelled."""


async def closed_loop(connect: Connect, args: argparse.Namespace) -> dict[str, Any]:
    """``args.depth`` closed-loop callers on one connection; the figures of the window."""
    stats = Stats()
    arguments = {"message": MESSAGE}
    expected = {"echoed": MESSAGE}
    async with connect(args.url) as call:

        async def caller() -> None:
            while stats.running:
                started = time.perf_counter()
                try:
                    result = await call(arguments)
                except Exception:  # noqa: BLE001 - whatever the client raises is a failed call
                    stats.answered(0.0, False)
                    # A call that fails without waiting must still let the window's timer run.
                    await anyio.lowlevel.checkpoint()
                    continue
                stats.answered(time.perf_counter() - started, result == expected)

        async with anyio.create_task_group() as group:
            for _ in range(args.depth):
                group.start_soon(caller)
            figures = await measure(
                stats,
                anyio.sleep,
                warmup=args.warmup,
                duration=args.duration,
                server_pid=args.server_pid,
            )
            # The callers stop after the call they have in flight; a stuck one must not hang.
            group.cancel_scope.deadline = anyio.current_time() + DRAIN
    return figures


def main(connect: Connect, library: str, loops: Sequence[str]) -> None:
    """Parse the options, run the closed loop on the chosen event loop, print one JSON line.

    ``library`` names the client (and version) in the figures; ``loops`` are
    the event loops it can run on, the first the default.
    """
    parser = argparse.ArgumentParser(description=f"C1 closed loop with {library}")
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--depth", type=int, default=1, help="calls in flight")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--loop", choices=loops, default=loops[0])
    args = parser.parse_args()
    backend, options = LOOPS[args.loop]
    figures = anyio.run(closed_loop, connect, args, backend=backend, backend_options=options)
    figures["library"] = f"{library} on {args.loop}"
    print(json.dumps(figures), flush=True)
