"""The original system: nextmcp 0.6.0's WebSocket transport with an echo tool.

Runs from ``benchmarks/.venv-peers``. ``WebSocketTransport.start()`` cannot
report the port it bound, so this serves nextmcp's own connection handler
(``handle_connection``: welcome message, then one message after the other)
through ``websockets.serve`` exactly as ``start()`` does, on port 0.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nextmcp import NextMCP
from nextmcp.transport.websocket import WebSocketTransport
from websockets.asyncio.server import serve

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import HOST, announce_bound, raise_fd_limit
else:
    from _common import HOST, announce_bound, raise_fd_limit

app = NextMCP("bench")


@app.tool()
async def echo(message: str) -> dict[str, str]:
    """Echo a message back (the seed example's tool, without its sleep)."""
    return {"echoed": message}


async def serve_forever(transport: WebSocketTransport) -> None:
    """Serve the transport's connections on port 0 as ``start()`` would, until killed."""
    async with serve(transport.handle_connection, HOST, 0) as server:
        transport.server = server
        announce_bound(server.sockets)
        await asyncio.Event().wait()


def run(transport: WebSocketTransport) -> None:
    """Raise the fd limit, then serve ``transport`` until killed."""
    raise_fd_limit()
    asyncio.run(serve_forever(transport))


if __name__ == "__main__":
    run(WebSocketTransport(app))
