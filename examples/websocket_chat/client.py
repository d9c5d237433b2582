"""WebSocket chat client: lists the tools, chats, reads the history, and calls tools concurrently.

Run ``python client.py`` while ``python server.py`` is running (options: ``--url``,
``--username``, ``--backend asyncio|trio``). Several clients at once share one history.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import anyio

from securemcp import SecureMCPError
from securemcp.transport import WebSocketClient


async def run(url: str, username: str) -> None:
    """Walk through everything the chat server offers, printing each step."""
    async with WebSocketClient(url) as client:
        print(f"Connected to {url}")

        print("\n1. Available tools:")
        for tool in await client.list_tools():
            print(f"   - {tool['name']}: {tool['description']}")

        print("\n2. Sending chat messages:")
        for text in ("Hello, world!", "SecureMCP over WebSocket is fast.", "Goodbye for now."):
            sent = await client.invoke_tool("send_message", {"username": username, "message": text})
            message = sent["message"]
            print(f"   [{message['timestamp']}] {message['username']}: {message['message']}")

        print("\n3. Message history:")
        history = await client.invoke_tool("get_messages", {"limit": 10})
        for message in history["messages"]:
            print(f"   [{message['timestamp']}] {message['username']}: {message['message']}")
        print(f"   ({len(history['messages'])} shown, {history['total']} in total)")

        print("\n4. Statistics:")
        stats = await client.invoke_tool("get_stats")
        print(f"   total messages: {stats['total_messages']}")
        print(f"   unique users:   {stats['unique_users']} {stats['users']}")

        print("\n5. Concurrent tool invocations:")
        results: list[Any] = [None] * 10
        started = time.perf_counter()

        async def call(index: int) -> None:
            # Keep failures out of the task group, which would wrap them in a group.
            try:
                results[index] = await client.invoke_tool(
                    "echo", {"message": f"concurrent #{index}"}
                )
            except SecureMCPError as exc:
                results[index] = exc

        async with anyio.create_task_group() as group:
            for index in range(len(results)):
                group.start_soon(call, index)
        for result in results:
            if isinstance(result, SecureMCPError):
                raise result
        elapsed = time.perf_counter() - started
        correct = sum(r["echoed"] == f"concurrent #{i}" for i, r in enumerate(results))
        print(f"   {correct}/{len(results)} echoes correct in {elapsed * 1000:.1f} ms")

        rtt = await client.ping()
        print(f"\nPing: {rtt * 1000:.2f} ms round trip")
    print("Done.")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; a one-line error and exit code 1 when the server cannot be reached."""
    parser = argparse.ArgumentParser(description="SecureMCP WebSocket chat client")
    parser.add_argument("--url", default="ws://localhost:8765", help="server URL")
    parser.add_argument("--username", default=f"user-{os.getpid()}", help="your chat name")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    try:
        anyio.run(run, args.url, args.username, backend=args.backend)
    except (OSError, SecureMCPError) as exc:
        print(f"error: cannot talk to the chat server at {args.url}: {exc}", file=sys.stderr)
        return 1

    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
