"""S7 history on SecureMCP: the chat example's tools over SQLite or Redis.

Runs from the project's environment::

    python benchmarks/servers/securemcp_history_server.py --store sqlite:/tmp/s7/chat.db
    python benchmarks/servers/securemcp_history_server.py --store redis://127.0.0.1:PORT/0

It logs ``[WS] Starting WebSocket server on ws://127.0.0.1:PORT``. The app is
``examples/websocket_chat/server.py``'s ``create_app(store)``, unchanged:
``send_message`` appends to the store and publishes, ``get_messages`` reads
the latest messages and the room's count. ``sqlite:PATH`` is the example's
default store (:class:`~securemcp.store.SQLiteMessageStore`, WAL,
``synchronous=NORMAL``); a ``redis://`` URL a
:class:`~securemcp.redis.RedisMessageStore`, opened with ``app.uses()``
(Redis's own configuration decides its durability). No security policy: the
example's rate limit would otherwise be what is measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from securemcp.store import MessageStore, SQLiteMessageStore
from securemcp.transport import WebSocketTransport

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import HOST, raise_fd_limit
else:
    from _common import HOST, raise_fd_limit

CHAT = Path(__file__).resolve().parents[2] / "examples" / "websocket_chat" / "server.py"


def load_chat() -> ModuleType:
    """The chat example's server module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("chat_example_server", CHAT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def open_store(spec: str) -> MessageStore:
    """``sqlite:PATH`` or a ``redis://`` URL."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from securemcp.redis import RedisMessageStore

        return RedisMessageStore(spec)
    if spec.startswith("sqlite:"):
        return SQLiteMessageStore(spec.removeprefix("sqlite:"))
    raise SystemExit(f"--store: sqlite:PATH or redis://..., not {spec!r}")


def main() -> None:
    """Serve on port 0 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--store", required=True, help="sqlite:PATH or redis://HOST:PORT/DB")
    args = parser.parse_args()
    raise_fd_limit()
    store = open_store(args.store)
    app = load_chat().create_app(store)
    if not isinstance(store, SQLiteMessageStore):
        app.uses(store)
    try:
        WebSocketTransport(app).run(HOST, 0, backend=args.backend, log_level=logging.INFO)
    finally:
        if isinstance(store, SQLiteMessageStore):
            store.close()


if __name__ == "__main__":
    main()
