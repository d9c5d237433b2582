"""SecureMCP's echo server on one backend: ``asyncio``, ``asyncio+uvloop`` or ``trio``.

Runs from the project's environment::

    python benchmarks/servers/securemcp_server.py --backend trio

It logs ``[WS] Starting WebSocket server on ws://127.0.0.1:PORT`` with the
bound port. Limits are raised so that they are not what the benchmark
measures: 4 MiB messages (S5 sends 256 KiB), 10,000 connections (S4 holds
2,000); every other setting (keepalive pings, timeouts, security policy) is
the default a user gets.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from securemcp import SecureMCP
from securemcp.protocol import Limits
from securemcp.transport import WebSocketTransport

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import HOST, raise_fd_limit
else:
    from _common import HOST, raise_fd_limit


app = SecureMCP("bench")


@app.tool()
async def echo(message: str) -> dict[str, str]:
    """Echo a message back."""
    return {"echoed": message}


def main() -> None:
    """Serve on port 0 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    raise_fd_limit()
    transport = WebSocketTransport(
        app,
        limits=Limits(max_message_size=4 * 1024 * 1024),
        max_connections=10_000,
    )
    transport.run(HOST, 0, backend=args.backend, log_level=logging.INFO)


if __name__ == "__main__":
    main()
