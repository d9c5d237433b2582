"""The original system: nextmcp 0.6.0's WebSocket transport with an echo tool.

Runs from ``benchmarks/.venv-peers``. ``WebSocketTransport.start()`` cannot
report the port it bound, so this serves nextmcp's own connection handler
(``handle_connection``: welcome message, then one message after the other)
through ``websockets.serve`` exactly as ``start()`` does, on port 0.
"""

from __future__ import annotations

import asyncio
import resource
import sys

from nextmcp import NextMCP
from nextmcp.transport.websocket import WebSocketTransport
from websockets.asyncio.server import serve

app = NextMCP("bench")


HOST = "127.0.0.1"


def raise_fd_limit() -> None:
    """Allow as many open files as the hard limit does (S4 opens 2,000 connections)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(port: int) -> None:
    """Tell the orchestrator the bound port (it reads this line from the log)."""
    print(f"[bench] listening on ws://{HOST}:{port}", file=sys.stderr, flush=True)


@app.tool()
async def echo(message: str) -> dict[str, str]:
    """Echo a message back (the seed example's tool, without its sleep)."""
    return {"echoed": message}


async def main() -> None:
    """Serve until killed."""
    transport = WebSocketTransport(app)
    async with serve(transport.handle_connection, HOST, 0) as server:
        transport.server = server
        announce(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(main())
