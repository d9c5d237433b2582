"""WebSocket chat server: many clients share one chat history through SecureMCP tools.

Run it with ``python server.py`` (options: ``--host``, ``--port``, ``--backend asyncio|trio``)
and talk to it with ``python client.py``.
"""

from __future__ import annotations

import argparse
from collections import deque
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from securemcp import SecureMCP
from securemcp.transport import WebSocketTransport

MAX_HISTORY = 10_000
"""Messages kept; the oldest are dropped past this, so memory stays bounded."""

app = SecureMCP("websocket-chat", "A chat room whose history every client shares.")

_history: deque[dict[str, str]] = deque(maxlen=MAX_HISTORY)

Username = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$", description="Who speaks"),
]
MessageText = Annotated[
    str,
    Field(min_length=1, max_length=4096, description="The message, at most 4096 characters"),
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@app.tool()
async def send_message(username: Username, message: MessageText) -> dict[str, Any]:
    """Send a chat message to everybody connected."""
    entry = {"username": username, "message": message, "timestamp": _now()}
    _history.append(entry)
    return {"status": "sent", "message": entry}


@app.tool()
async def get_messages(
    limit: Annotated[int, Field(ge=1, le=1000, description="How many recent messages")] = 10,
) -> dict[str, Any]:
    """Retrieve the most recent chat messages, oldest first."""
    recent = list(_history)[-limit:]
    return {"messages": recent, "total": len(_history)}


@app.tool()
async def get_stats() -> dict[str, Any]:
    """Chat statistics: total messages and the users who have spoken."""
    users = sorted({entry["username"] for entry in _history})
    return {"total_messages": len(_history), "unique_users": len(users), "users": users}


@app.tool()
async def clear_history() -> dict[str, Any]:
    """Delete the whole chat history."""
    deleted = len(_history)
    _history.clear()
    return {"status": "cleared", "messages_deleted": deleted}


@app.tool()
async def echo(message: MessageText) -> dict[str, Any]:
    """Echo a message back (useful for testing)."""
    return {"echoed": message, "timestamp": _now()}


def main(argv: list[str] | None = None) -> None:
    """Print the banner and serve until Ctrl+C."""
    parser = argparse.ArgumentParser(description="SecureMCP WebSocket chat server")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)

    rule = "=" * 60
    print(rule)
    print("WebSocket Chat Server")
    print(rule)
    print("Starting server...")
    print(f"Registered tools: {list(app.tools)}")
    print()
    print(f"Server will be available at: ws://localhost:{args.port}")
    print("Press Ctrl+C to stop")
    print(rule)
    print(flush=True)

    WebSocketTransport(app).run(host=args.host, port=args.port, backend=args.backend)


if __name__ == "__main__":
    main()
