"""Call the tutorial's notes server from the official MCP Python SDK (1.x) over WebSocket.

``pip install "mcp<2"``, then ``python mcp_client.py ws://127.0.0.1:8765``.
"""

from __future__ import annotations

import sys

import anyio
from mcp import ClientSession
from mcp.client.websocket import websocket_client


async def main(url: str) -> None:
    """List the tools, add a note, read the notes back."""
    async with websocket_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        print(sorted(tool.name for tool in tools.tools))
        added = await session.call_tool("add_note", {"text": "from MCP"})
        print(added.structuredContent)
        listed = await session.call_tool("list_notes", {})
        print(listed.structuredContent)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
