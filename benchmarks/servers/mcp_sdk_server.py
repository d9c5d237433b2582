"""The official MCP Python SDK 1.x over WebSocket: a FastMCP echo tool under uvicorn.

Runs from ``benchmarks/.venv-peers``. ``mcp.server.websocket.websocket_server``
(removed in mcp 2.0) adapts the ASGI WebSocket to the SDK's streams; uvicorn
runs with its defaults (``loop="auto"``: uvloop, which is installed), as it is
usually deployed.

FastMCP logs at INFO by default, through rich, and the low-level server logs
one line per request at INFO ("Processing request of type CallToolRequest"):
on the benchmark machine that line took a third or more of each M2 call. A
deployment that cares about speed turns it down, so the benchmark runs
FastMCP at WARNING (its ``log_level``, which it hands to
``logging.basicConfig``), as uvicorn runs at ``warning`` too. The rest is
the SDK's default; most of what is left of a call is its per-call
``jsonschema`` validation of the arguments (``check_schema`` included).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.server.websocket import websocket_server

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import listening_socket, raise_fd_limit
else:
    from _common import listening_socket, raise_fd_limit

warnings.simplefilter("ignore", DeprecationWarning)

server = FastMCP("bench", log_level="WARNING")
LOWLEVEL = server._mcp_server
"""FastMCP's protocol server, which runs over any pair of streams."""


@server.tool()
async def echo(message: str) -> dict[str, str]:
    """Echo a message back."""
    return {"echoed": message}


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Every WebSocket path is the MCP endpoint."""
    if scope["type"] != "websocket":
        return
    async with websocket_server(scope, receive, send) as (read, write):
        await LOWLEVEL.run(read, write, LOWLEVEL.create_initialization_options())


def main() -> None:
    """Bind a free port, announce it, serve until killed."""
    raise_fd_limit()
    sock = listening_socket(4096)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
