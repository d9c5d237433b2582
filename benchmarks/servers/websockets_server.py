"""A minimal hand-written ``websockets`` server speaking the seed dialect's echo.

Runs from ``benchmarks/.venv-peers``; ``--uvloop`` runs it on uvloop. One
handler per connection: the welcome message, then each request answered in
turn, as the simplest correct design does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

WELCOME = json.dumps(
    {"id": "welcome", "result": {"message": "Connected to bench", "tools": ["echo"]}}
)


HOST = "127.0.0.1"


def raise_fd_limit() -> None:
    """Allow as many open files as the hard limit does (S4 opens 2,000 connections)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(port: int) -> None:
    """Tell the orchestrator the bound port (it reads this line from the log)."""
    print(f"[bench] listening on ws://{HOST}:{port}", file=sys.stderr, flush=True)


def echo(message: str) -> dict[str, str]:
    """The tool: echo a message back, without any sleep."""
    return {"echoed": message}


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


async def main() -> None:
    """Serve until killed."""
    async with serve(handler, HOST, 0, max_size=4 * 1024 * 1024) as server:
        announce(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    if args.uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
