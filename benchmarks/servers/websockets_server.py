"""A minimal hand-written ``websockets`` server speaking the seed dialect's echo.

Runs from ``benchmarks/.venv-peers``; ``--uvloop`` runs it on uvloop. One
handler per connection: the welcome message, then each request answered in
turn, as the simplest correct design does.

``--no-compression`` declines permessage-deflate, which ``websockets``
accepts by default: the load generator never offers it, but the C1 clients
built on ``websockets`` do, and C1 measures the clients, not the deflate
work of the server they happen to meet (SecureMCP's client does not offer
it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import HOST, WELCOME, announce_bound, echo, raise_fd_limit
else:
    from _common import HOST, WELCOME, announce_bound, echo, raise_fd_limit


def answer(text: str | bytes) -> str:
    """The answer to one request."""
    request = json.loads(text)
    method = request.get("method")
    params = request.get("params") or {}
    if method == "invoke_tool" and params.get("tool_name") == "echo":
        return json.dumps({"id": request.get("id"), "result": echo(**params.get("params", {}))})
    if method == "ping":
        return json.dumps({"id": request.get("id"), "result": {"pong": True}})
    error = {"code": -32601, "message": f"Unknown method: {method}"}
    return json.dumps({"id": request.get("id"), "error": error})


async def handler(websocket: ServerConnection) -> None:
    """Greet, then answer every request in order."""
    try:
        await websocket.send(WELCOME)
        async for message in websocket:
            await websocket.send(answer(message))
    except ConnectionClosed:
        pass


async def main(compression: str | None) -> None:
    """Serve until killed."""
    async with serve(handler, HOST, 0, compression=compression) as server:
        announce_bound(server.sockets)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    serving = main(None if args.no_compression else "deflate")
    if args.uvloop:
        import uvloop

        uvloop.run(serving)
    else:
        asyncio.run(serving)
