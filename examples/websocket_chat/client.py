"""WebSocket chat client: a walk through every tool, or a live view of one room.

Run ``python client.py`` while ``python server.py`` is running (options: ``--url``,
``--username``, ``--room``, ``--token``, ``--backend asyncio|trio``). Several clients at once
share one history. ``python client.py --follow [--room ROOM]`` joins a room and prints
each message the moment somebody sends it, until Ctrl+C, reconnecting when the server restarts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from securemcp import SecureMCPError
from securemcp.transport import WebSocketClient

DEFAULT_ROOM = "general"


def _line(message: dict[str, Any]) -> str:
    return f"[{message['timestamp']}] {message['username']}: {message['message']}"


async def run(url: str, username: str, room: str, token: str | None) -> None:
    """Walk through everything the chat server offers, printing each step."""
    # The seed calls carry no room; "general" is the server's default.
    where: dict[str, Any] = {} if room == DEFAULT_ROOM else {"room": room}
    async with WebSocketClient(url, token=token) as client:
        print(f"Connected to {url}")

        print("\n1. Available tools:")
        for tool in await client.list_tools():
            print(f"   - {tool['name']}: {tool['description']}")

        print("\n2. Sending chat messages:")
        for text in ("Hello, world!", "SecureMCP over WebSocket is fast.", "Goodbye for now."):
            sent = await client.invoke_tool(
                "send_message", {"username": username, "message": text, **where}
            )
            print(f"   {_line(sent['message'])}")

        print("\n3. Message history:")
        history = await client.invoke_tool("get_messages", {"limit": 10, **where})
        for message in history["messages"]:
            print(f"   {_line(message)}")
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


async def follow(url: str, room: str, token: str | None, backlog: int) -> None:
    """Join ``room`` and print its messages as they arrive (the last ``backlog`` first).

    The client reconnects by itself when the server goes away (a restart, a crash), waiting a
    little longer after each failed attempt; the hook below rejoins the room (the new server
    connection knows nothing of the old one) and prints what was said in the meantime.
    """
    last_id = 0  # the newest message printed: catching up must not print one twice
    # While catching up, live messages wait here: shown before the history they
    # follow, they would move last_id past the messages missed in the outage.
    held: list[dict[str, Any]] | None = None

    def show(message: dict[str, Any]) -> None:
        nonlocal last_id
        if held is not None:
            held.append(message)
        elif message["id"] > last_id:
            last_id = message["id"]
            print(_line(message), flush=True)

    async def rejoin(client: WebSocketClient) -> None:
        nonlocal last_id, held
        held, missed = [], []
        try:
            await client.invoke_tool("join_room", {"room": room})
            print(f"--- reconnected to {url}, back in #{room} ---", flush=True)
            history = await client.invoke_tool("get_messages", {"limit": 100, "room": room})
            missed = history["messages"]
            if not missed or missed[-1]["id"] < last_id:
                last_id = 0  # a server without a durable store forgot the history, ids start over
        finally:
            live, held = held, None
            for message in [*missed, *sorted(live, key=lambda message: message["id"])]:
                show(message)

    async with WebSocketClient(url, token=token, reconnect=True, on_reconnect=rejoin) as client:
        joined = await client.invoke_tool("join_room", {"room": room})
        if backlog:
            history = await client.invoke_tool("get_messages", {"limit": backlog, "room": room})
            for message in history["messages"]:
                show(message)
        print(
            f"Following #{room} on {url} ({joined['members']} member(s) here); Ctrl+C to stop",
            flush=True,
        )
        async for method, params in client.notifications():
            if method == "chat.message" and params.get("room") == room:
                show(params)
            elif method == "chat.cleared" and params.get("room") == room:
                print(f"--- #{room} history cleared ---", flush=True)
    # The iteration ends only once the client stopped reconnecting (the server refused it).
    cause = client.reconnect_error
    raise SecureMCPError(f"the server closed the connection{f': {cause}' if cause else ''}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo (or follow a room); one line on stderr and exit 1 when the server fails us."""
    parser = argparse.ArgumentParser(description="SecureMCP WebSocket chat client")
    parser.add_argument("--url", default="ws://localhost:8765", help="server URL")
    parser.add_argument("--username", default=f"user-{os.getpid()}", help="your chat name")
    parser.add_argument("--room", default=DEFAULT_ROOM, help="room to use (default general)")
    parser.add_argument("--token", default=None, help="bearer token (the admin token, say)")
    parser.add_argument(
        "--follow", action="store_true", help="print the room's messages live until Ctrl+C"
    )
    parser.add_argument(
        "--history", type=int, default=0, help="with --follow: show this many past messages first"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    try:
        if args.follow:
            anyio.run(follow, args.url, args.room, args.token, args.history, backend=args.backend)
        else:
            anyio.run(run, args.url, args.username, args.room, args.token, backend=args.backend)
    except (OSError, SecureMCPError) as exc:
        print(f"error: cannot talk to the chat server at {args.url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Stopping --follow is the normal way out of it.
        return 0 if args.follow else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
