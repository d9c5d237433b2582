"""S6 on the original system: nextmcp 0.6.0, a tool fanning each message out with ``broadcast()``.

Runs from ``benchmarks/.venv-peers``. nextmcp has no rooms: ``broadcast()``
sends to every open connection, so ``join_room`` only answers, and every
connection (the sender included, as in SecureMCP's variant where the sender
joins the room too) gets each ``chat.message``. Served through
``websockets.serve`` on port 0, exactly as ``WebSocketTransport.start()`` does
(see ``nextmcp_server.py``).
"""

from __future__ import annotations

import asyncio
import resource
import sys
from datetime import UTC, datetime
from typing import Any

from nextmcp import NextMCP
from nextmcp.transport.websocket import WebSocketTransport, WSMessage
from websockets.asyncio.server import serve

HOST = "127.0.0.1"

app = NextMCP("bench-broadcast")
transport = WebSocketTransport(app)
_next_id = 0


@app.tool()
async def join_room(room: str) -> dict[str, Any]:
    """Answer like SecureMCP's tool; nextmcp broadcasts to everybody anyway."""
    return {"status": "joined", "room": room, "members": len(transport.connections)}


@app.tool()
async def send_message(username: str, message: str, room: str = "general") -> dict[str, Any]:
    """Build the chat message and fan it out to every connection."""
    global _next_id
    _next_id += 1
    entry = {
        "id": _next_id,
        "room": room,
        "username": username,
        "message": message,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    await transport.broadcast(WSMessage(method="chat.message", params=entry))
    return {"status": "sent", "message": entry}


async def main() -> None:
    """Serve until killed."""
    async with serve(transport.handle_connection, HOST, 0) as server:
        transport.server = server
        port = server.sockets[0].getsockname()[1]
        print(f"[bench] listening on ws://{HOST}:{port}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main())
