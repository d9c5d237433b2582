"""Call the tutorial's notes server from Python: ``python client.py ws://127.0.0.1:8765``."""

from __future__ import annotations

import os
import sys

import anyio

from securemcp import Unauthenticated
from securemcp.transport import WebSocketClient


async def main(url: str) -> None:
    """Add a note and read it back anonymously; then clear the notes as the admin."""
    async with WebSocketClient(url) as client:
        print(await client.invoke_tool("add_note", {"text": "buy milk"}))
        print(await client.invoke_tool("list_notes", {"limit": 5}))
        try:
            await client.invoke_tool("clear_notes", {})
        except Unauthenticated as exc:
            print(f"anonymous clear_notes: {exc.code} {exc}")
    async with WebSocketClient(url, token=os.environ["NOTES_ADMIN_TOKEN"]) as admin:
        print(await admin.invoke_tool("clear_notes", {}))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
