"""C1 with the seed's client, nextmcp 0.6.0's ``WebSocketClient``, calls as concurrent tasks.

Runs from ``benchmarks/.venv-peers``, on asyncio (the client is asyncio
only) or uvloop::

    benchmarks/.venv-peers/bin/python benchmarks/clients/nextmcp_client.py \\
        --url ws://127.0.0.1:PORT/ --server-pid PID --depth 64

The client runs with its defaults: ``websockets.connect`` with its own
defaults underneath (it offers permessage-deflate; the C1 server declines
it), a uuid4 id and an ``asyncio.wait_for`` of 30 s per call. Connecting
waits for the server's welcome.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING

from nextmcp.transport.ws_client import WebSocketClient

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.clients._common import invoking, main
else:
    from _common import invoking, main

if __name__ == "__main__":
    main(invoking(WebSocketClient), f"nextmcp {version('nextmcp')}", ["asyncio", "uvloop"])
