"""An MCP server built with the official Python SDK, served over WebSocket by uvicorn.

The interop tests run it in a subprocess (``python tests/sdk_ws_server.py``):
it binds 127.0.0.1 on a free port, prints that port on the first line of its
output, and serves ``ws://127.0.0.1:<port>/`` until terminated.
"""

from __future__ import annotations

import socket
import sys
import warnings
from typing import Any

import anyio
import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.websocket import websocket_server
from pydantic import BaseModel

# The SDK marks its WebSocket transport deprecated (removed in mcp 2.0).
warnings.simplefilter("ignore", DeprecationWarning)

server = FastMCP("sdk-server", instructions="The official SDK's server.")
_cancelled: list[str] = []
_cancelled_event: anyio.Event | None = None


class Address(BaseModel):
    city: str
    tags: list[str]


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def where(name: str, address: Address) -> str:
    """Say where someone lives (nested arguments)."""
    return f"{name} lives in {address.city} ({', '.join(address.tags)})"


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("nope")


@server.tool()
async def count(n: int, ctx: Context[Any, Any, Any]) -> int:
    """Report progress n times, then return n."""
    for step in range(1, n + 1):
        await ctx.report_progress(step, n, f"step {step}")
    return n


@server.tool()
async def block(tag: str) -> str:
    """Wait until cancelled; remember the cancellation under ``tag``."""
    global _cancelled_event
    if _cancelled_event is None:
        _cancelled_event = anyio.Event()
    try:
        await anyio.sleep_forever()
    finally:
        _cancelled.append(tag)
        _cancelled_event.set()
    return "unreachable"


@server.tool()
async def cancelled() -> list[str]:
    """The tags of the cancelled ``block`` calls, once there is one (5 s at most)."""
    global _cancelled_event
    if _cancelled_event is None:
        _cancelled_event = anyio.Event()
    with anyio.move_on_after(5):
        await _cancelled_event.wait()
    return list(_cancelled)


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI application: every WebSocket path is the MCP endpoint."""
    if scope["type"] != "websocket":
        return
    async with websocket_server(scope, receive, send) as (read, write):
        lowlevel = server._mcp_server
        await lowlevel.run(read, write, lowlevel.create_initialization_options())


def main() -> None:
    """Bind a free port, announce it, serve."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # Listening before the port is announced: a client may connect at once.
    sock.listen(100)
    print(sock.getsockname()[1], flush=True)
    # Nothing else on stdout: the test reads only the port, and a full pipe would block us.
    sys.stdout = sys.stderr
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws="wsproto")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
