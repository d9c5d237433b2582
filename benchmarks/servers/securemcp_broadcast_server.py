"""S6 on SecureMCP: rooms as broadcast topics, ``send_message`` publishing to its room.

Runs from the project's environment::

    python benchmarks/servers/securemcp_broadcast_server.py --backend trio
    python benchmarks/servers/securemcp_broadcast_server.py --redis redis://127.0.0.1:PORT/0

``--redis URL`` broadcasts through :class:`~securemcp.redis.RedisBroker` (S7:
several such processes on one Redis share the room); without it the
in-process broker (S6). It logs ``[WS] Starting WebSocket server on ws://127.0.0.1:PORT``. The tools
are the chat example's broadcast path without its store and rate limit, so
that the fan-out is what is measured: ``join_room`` subscribes the caller to
the room's topic, ``send_message`` publishes a ``chat.message`` notification
there (``ctx.publish``). Every setting is the default, as in
``securemcp_server.py`` (the 501 connections fit the default
``max_connections``). ``join_room`` answers once the subscription is live in
Redis (``ctx.subscriptions_live()``, at once with the in-process broker), so
that a receiver on another process misses nothing the sender publishes next.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from securemcp import Context, SecureMCP
from securemcp.pubsub import Broker
from securemcp.transport import WebSocketTransport

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import HOST, raise_fd_limit
else:
    from _common import HOST, raise_fd_limit

app = SecureMCP("bench-broadcast")
_ids = itertools.count(1)


@app.tool()
async def join_room(room: str, ctx: Context) -> dict[str, Any]:
    """Subscribe the caller's connection to ``room``, live in every process on return."""
    ctx.subscribe(room)
    if not await ctx.subscriptions_live():
        raise RuntimeError("the subscription did not become live in Redis")
    return {"status": "joined", "room": room, "members": ctx.subscriber_count(room)}


@app.tool()
async def send_message(
    username: str, message: str, ctx: Context, room: str = "general"
) -> dict[str, Any]:
    """Build the chat message and publish it to every member of ``room``."""
    entry = {
        "id": next(_ids),
        "room": room,
        "username": username,
        "message": message,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    ctx.publish(room, "chat.message", entry)
    return {"status": "sent", "message": entry}


def main() -> None:
    """Serve on port 0 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--redis", metavar="URL", help="broadcast through RedisBroker(URL)")
    args = parser.parse_args()
    raise_fd_limit()
    broker: Broker | None = None
    if args.redis:
        from securemcp.redis import RedisBroker

        broker = RedisBroker(args.redis)
    transport = WebSocketTransport(app, broker=broker)
    transport.run(HOST, 0, backend=args.backend, log_level=logging.INFO)


if __name__ == "__main__":
    main()
