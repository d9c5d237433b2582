"""C1 with SecureMCP's ``WebSocketClient``: ``invoke_tool("echo", ...)`` calls as concurrent tasks.

Runs from the project's environment, on any of its backends::

    python benchmarks/clients/securemcp_client.py --url ws://127.0.0.1:PORT/ \\
        --server-pid PID --depth 64 --loop trio

The client runs with its defaults (30 s per-call timeout included).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING

from securemcp.transport import WebSocketClient

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.clients._common import invoking, main
else:
    from _common import invoking, main

if __name__ == "__main__":
    main(
        invoking(WebSocketClient),
        f"securemcp {version('securemcp')}",
        ["asyncio", "uvloop", "trio"],
    )
