"""SecureMCP's echo server on one backend: ``asyncio``, ``asyncio+uvloop`` or ``trio``.

Runs from the project's environment::

    python benchmarks/servers/securemcp_server.py --backend trio

It logs ``[WS] Starting WebSocket server on ws://127.0.0.1:PORT`` with the
bound port. Every setting is the default a user gets (the worst case):
message size, ``max_connections``, keepalive pings, timeouts, security
policy. S5's 256 KiB messages fit the default 1 MiB message size; S4's
10,000 idle connections need the default ``max_connections`` to allow them,
and where it does not, the benchmark reports the refusals rather than
raising the limit here.

``raise_fd_limit()`` is called because every peer server calls it too (their
libraries do not raise the soft limit, and S4 would otherwise stop them at
1,024 file descriptors): the same starting point for all. A SecureMCP that
raises the limit itself at start-up gets nothing more from it.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from securemcp import SecureMCP
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
    WebSocketTransport(app).run(HOST, 0, backend=args.backend, log_level=logging.INFO)


if __name__ == "__main__":
    main()
