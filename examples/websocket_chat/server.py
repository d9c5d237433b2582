"""WebSocket chat server: rooms, live messages and a durable history, as SecureMCP tools.

Run it with ``python server.py`` (options: ``--db``, ``--admin-token``, ``--rate``, ``--burst``,
``--host``, ``--port``, ``--backend asyncio|trio``, ``--redis URL``, ``--workers N``) and talk
to it with ``python client.py``.

Every client that joins a room receives each message sent there as a
``chat.message`` notification the moment it is stored. The history lives in
SQLite (``--db``, default ``chat.db``); clearing it needs the admin token.
With ``--redis URL`` the rooms, the history, the rate limits and the broadcast
live in Redis instead, shared by every worker (``--workers N``) and every
machine that points at the same Redis.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from securemcp import (
    Context,
    InvalidParams,
    Principal,
    RateLimiter,
    SecureMCP,
    SecurityPolicy,
    StaticTokenAuthenticator,
)
from securemcp.protocol import HTTPRequest
from securemcp.pubsub import Broker
from securemcp.ratelimit import AsyncRateLimiter
from securemcp.store import MemoryMessageStore, MessageStore, SQLiteMessageStore
from securemcp.transport import WebSocketTransport

DEFAULT_ROOM = "general"
MAX_ROOMS_PER_CONNECTION = 32
"""Rooms one connection may have joined at once (each subscription costs server memory)."""
MESSAGE_NOTIFICATION = "chat.message"
"""The notification every member of a room receives for each message sent there."""
CLEARED_NOTIFICATION = "chat.cleared"
"""The notification members of a room receive when an admin clears its history."""
ADMIN_TOKEN_ENV = "CHAT_ADMIN_TOKEN"

Username = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Who speaks: 1-64 characters, no control characters",
    ),
]
MessageText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The message: 1-4096 characters, no control characters",
    ),
]
Room = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="A room name: 1-64 letters, digits, '_' or '-'",
    ),
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def topic(room: str) -> str:
    """The broadcast topic of ``room``."""
    return f"room:{room}"


def create_app(store: MessageStore) -> SecureMCP:
    """The chat's tools over ``store``; the transport supplies the broadcast."""
    app = SecureMCP("websocket-chat", "Chat rooms with a shared, durable history.")
    if isinstance(store, AbstractAsyncContextManager):
        # A store that holds connections (Redis) is opened while the server serves.
        app.uses(store)

    @app.tool()
    async def send_message(
        username: Username, message: MessageText, ctx: Context, room: Room = DEFAULT_ROOM
    ) -> dict[str, Any]:
        """Send a message to a room; every client that joined it receives it at once."""
        stored = (await store.append(room, username, message)).as_dict()
        # Stored (committed) before anyone hears of it or the sender gets its answer.
        ctx.publish(topic(room), MESSAGE_NOTIFICATION, stored)
        return {"status": "sent", "message": stored}

    @app.tool()
    async def get_messages(
        limit: Annotated[int, Field(ge=1, le=1000, description="How many messages")] = 10,
        room: Room = DEFAULT_ROOM,
        before: Annotated[
            int | None, Field(ge=1, description="Only messages with an id below this")
        ] = None,
    ) -> dict[str, Any]:
        """A room's most recent messages, oldest first; page back with before=<oldest id>."""
        messages = await store.list(room, before=before, limit=limit)
        return {
            "messages": [stored.as_dict() for stored in messages],
            "total": await store.count(room),
            "room": room,
        }

    @app.tool()
    async def get_stats() -> dict[str, Any]:
        """Chat statistics: total messages and the users who have spoken."""
        users = await store.users()
        return {"total_messages": await store.count(), "unique_users": len(users), "users": users}

    @app.tool(scopes={"admin"})
    async def clear_history(ctx: Context, room: Room | None = None) -> dict[str, Any]:
        """Delete the history of one room, or of every room (needs the admin token)."""
        deleted = await store.clear(room)
        rooms = [room] if room is not None else _joined_rooms(ctx)
        for name in rooms:
            ctx.publish(topic(name), CLEARED_NOTIFICATION, {"room": name})
        return {"status": "cleared", "messages_deleted": deleted}

    @app.tool()
    async def echo(message: MessageText) -> dict[str, Any]:
        """Echo a message back (useful for testing)."""
        return {"echoed": message, "timestamp": _now()}

    @app.tool()
    async def join_room(room: Room, ctx: Context) -> dict[str, Any]:
        """Receive every message sent to the room from now on, as chat.message notifications."""
        if room not in _rooms_of(ctx) and len(ctx.subscriptions) >= MAX_ROOMS_PER_CONNECTION:
            raise InvalidParams(
                f"Invalid params: a connection may join at most {MAX_ROOMS_PER_CONNECTION} rooms"
            )
        ctx.subscribe(topic(room))
        # Across processes (Redis) a subscription is live a round trip later:
        # once this returns, nothing sent to the room from any server is missed.
        await ctx.subscriptions_live()
        return {"status": "joined", "room": room, "members": ctx.subscriber_count(topic(room))}

    @app.tool()
    async def leave_room(room: Room, ctx: Context) -> dict[str, Any]:
        """Stop receiving the room's messages."""
        ctx.unsubscribe(topic(room))
        return {"status": "left", "room": room, "members": ctx.subscriber_count(topic(room))}

    @app.tool()
    async def list_rooms(ctx: Context) -> dict[str, Any]:
        """Every room with members or messages: name, members connected, messages stored."""
        counts = await store.rooms()
        names = sorted({DEFAULT_ROOM, *counts, *_joined_rooms(ctx)})
        return {
            "rooms": [
                {
                    "name": name,
                    "members": ctx.subscriber_count(topic(name)),
                    "messages": counts.get(name, 0),
                }
                for name in names
            ]
        }

    return app


def _rooms_of(ctx: Context) -> set[str]:
    return {name.removeprefix("room:") for name in ctx.subscriptions if name.startswith("room:")}


def _joined_rooms(ctx: Context) -> list[str]:
    """Rooms that somebody on this server has joined."""
    return [name.removeprefix("room:") for name in ctx.topics() if name.startswith("room:")]


HTTPAnswer = tuple[int, list[tuple[str, str]], bytes]

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The browser page (``index.html``, ``app.js``, ``style.css``), served on the chat's port."""
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere: the policy makes that a rule for the
# browser too, and keeps the page out of other sites' frames ('self' in
# connect-src covers ws:// and wss:// to this same host).
_PAGE_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]


def load_page(directory: Path = STATIC_DIR) -> dict[str, HTTPAnswer]:
    """The page's answers by request path (``/`` is ``index.html``), read once.

    Only these exact paths are ever served: no request can reach another file.
    """
    files = {
        f"/{path.name}": (
            200,
            [("Content-Type", _CONTENT_TYPES[path.suffix]), *_PAGE_HEADERS],
            path.read_bytes(),
        )
        for path in sorted(directory.iterdir())
        if path.suffix in _CONTENT_TYPES and path.is_file()
    }
    files["/"] = files["/index.html"]
    return files


_PAGE = load_page()


def http_handler(request: HTTPRequest) -> HTTPAnswer | None:
    """Answer plain HTTP GETs on the chat's port (the browser page); ``None``: 404."""
    return _PAGE.get(request.path.partition("?")[0])


def open_store(db: str, redis: str | None = None) -> MessageStore:
    """The store ``--redis`` or ``--db`` names: Redis, SQLite, ``:memory:`` or ``memory``."""
    if redis is not None:
        from securemcp.redis import RedisMessageStore

        return RedisMessageStore(redis)
    if db == "memory":
        return MemoryMessageStore()
    return SQLiteMessageStore(db)


STORE_URL_ENV = "SECUREMCP_STORE_URL"
"""Where ``securemcp serve server:app --store URL`` (or ``--redis URL``) says the history lives."""


def store_from_url(url: str | None) -> MessageStore:
    """The store a ``--store`` URL names: ``redis://`` (or ``rediss://``, ``unix://``) for
    Redis, ``memory``, else an SQLite file path; none: ``chat.db``."""
    if url is None:
        return open_store("chat.db")
    if url.partition("://")[0] in ("redis", "rediss", "unix"):
        return open_store("chat.db", url)
    return open_store(url)


def __getattr__(name: str) -> Any:
    """``app``, built on first use, for ``securemcp serve server:app``.

    Its history is where ``$SECUREMCP_STORE_URL`` says (the command's
    ``--store``/``--redis``), else ``chat.db``. Built lazily so that importing
    this module (the tests, ``python server.py``) opens no store.
    """
    if name == "app":
        app = create_app(store_from_url(os.environ.get(STORE_URL_ENV)))
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_broker(redis: str | None) -> Broker | None:
    """Redis pub/sub with ``--redis`` (rooms span processes); else the transport's own."""
    if redis is None:
        return None
    from securemcp.redis import RedisBroker

    return RedisBroker(redis)


def security_policy(
    admin_token: str | None, rate: float, burst: float, redis: str | None = None
) -> SecurityPolicy:
    """Anonymous users may chat; the admin token grants the ``admin`` scope.

    With ``redis`` the buckets of principals (the admin) are shared by every
    process; an anonymous user's are its connection's, which one process serves.
    """
    authenticator = (
        None
        if admin_token is None
        else StaticTokenAuthenticator({admin_token: Principal("admin", frozenset({"admin"}))})
    )
    # A generous bound on every call, and the chat's own on sending, per
    # connection (anonymous) or per principal (the admin).
    overall = (max(rate * 20, 100.0), max(burst * 20, 200.0))
    per_tool = {"send_message": (rate, burst)}
    limiter: RateLimiter | AsyncRateLimiter
    if redis is None:
        limiter = RateLimiter(*overall, per_tool=per_tool)
    else:
        from securemcp.redis import RedisRateLimiter

        limiter = RedisRateLimiter(redis, *overall, per_tool=per_tool)
    return SecurityPolicy(authenticator=authenticator, allow_anonymous=True, rate_limiter=limiter)


def _host_of(url: str) -> str:
    """``host:port/db`` of a Redis URL: never its password, on the banner."""
    return url.partition("://")[2].rpartition("@")[2]


def main(argv: Sequence[str] | None = None) -> None:
    """Print the banner and serve until Ctrl+C."""
    parser = argparse.ArgumentParser(description="SecureMCP WebSocket chat server")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--db",
        default="chat.db",
        help="SQLite history file (default chat.db; ':memory:' or 'memory' keep nothing)",
    )
    parser.add_argument(
        "--admin-token",
        default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"token that may clear the history (default: ${ADMIN_TOKEN_ENV}; none: nobody can)",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second per client")
    parser.add_argument("--burst", type=float, default=10.0, help="message burst per client")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="keep rooms, history, rate limits and broadcast in Redis, shared by every "
        "worker and machine using it (e.g. redis://127.0.0.1:6379/0; needs securemcp[redis])",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the port (more than 1 needs --redis)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and args.redis is None:
        parser.error(
            "--workers above 1 needs --redis URL: without it each process would keep "
            "its own rooms, history and broadcast"
        )
    try:
        policy = security_policy(args.admin_token or None, args.rate, args.burst, args.redis)
        store = open_store(args.db, args.redis)
        broker = open_broker(args.redis)
    except (ValueError, ImportError) as exc:
        parser.error(str(exc))

    app = create_app(store)
    rule = "=" * 60
    print(rule)
    print("WebSocket Chat Server")
    print(rule)
    print("Starting server...")
    print(f"Registered tools: {list(app.tools)}")
    print(f"History: {args.db if args.redis is None else 'Redis at ' + _host_of(args.redis)}")
    if args.workers > 1:
        print(f"Workers: {args.workers}")
    print(f"Admin token: {'set' if args.admin_token else 'not set (clear_history disabled)'}")
    print()
    print(f"Server will be available at: ws://localhost:{args.port}")
    print(f"Chat page: http://localhost:{args.port}/")
    print("Press Ctrl+C to stop")
    print(rule)
    print(flush=True)

    transport = WebSocketTransport(app, security=policy, http_handler=http_handler, broker=broker)
    try:
        transport.run(host=args.host, port=args.port, backend=args.backend, workers=args.workers)
    finally:
        if isinstance(store, SQLiteMessageStore):
            store.close()


if __name__ == "__main__":
    main()
