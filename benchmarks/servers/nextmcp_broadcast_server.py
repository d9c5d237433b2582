"""S6 on the original system: nextmcp 0.6.0, a tool fanning each message out with ``broadcast()``.

Runs from ``benchmarks/.venv-peers``. nextmcp has no rooms: ``broadcast()``
sends to every open connection, so ``join_room`` only answers, and every
connection (the sender included, as in SecureMCP's variant where the sender
joins the room too) gets each ``chat.message``. Served through
``websockets.serve`` on port 0, exactly as ``WebSocketTransport.start()`` does
(see ``nextmcp_server.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nextmcp import NextMCP
from nextmcp.transport.websocket import WebSocketTransport, WSMessage

# Served as nextmcp_server.py serves. Run as a script, this file finds that sibling on
# sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers.nextmcp_server import run
else:
    from nextmcp_server import run

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


if __name__ == "__main__":
    run(transport)
