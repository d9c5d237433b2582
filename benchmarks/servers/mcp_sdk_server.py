"""The official MCP Python SDK 1.x over WebSocket: a FastMCP echo tool under uvicorn.

Runs from ``benchmarks/.venv-peers``. ``mcp.server.websocket.websocket_server``
(removed in mcp 2.0) adapts the ASGI WebSocket to the SDK's streams; uvicorn
runs with its defaults (``loop="auto"``: uvloop, which is installed), as it is
usually deployed.
"""

from __future__ import annotations

import resource
import socket
import sys
import warnings
from typing import Any

import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.server.websocket import websocket_server

warnings.simplefilter("ignore", DeprecationWarning)

server = FastMCP("bench")


HOST = "127.0.0.1"


def raise_fd_limit() -> None:
    """Allow as many open files as the hard limit does (S4 opens 2,000 connections)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(port: int) -> None:
    """Tell the orchestrator the bound port (it reads this line from the log)."""
    print(f"[bench] listening on ws://{HOST}:{port}", file=sys.stderr, flush=True)


@server.tool()
async def echo(message: str) -> dict[str, str]:
    """Echo a message back."""
    return {"echoed": message}


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Every WebSocket path is the MCP endpoint."""
    if scope["type"] != "websocket":
        return
    async with websocket_server(scope, receive, send) as (read, write):
        lowlevel = server._mcp_server
        await lowlevel.run(read, write, lowlevel.create_initialization_options())


def main() -> None:
    """Bind a free port, announce it, serve until killed."""
    raise_fd_limit()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(4096)
    announce(sock.getsockname()[1])
    config = uvicorn.Config(app, lifespan="off", log_level="warning", backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
