"""The start-up every benchmark server shares: the fd limit, port 0, announcing the port.

The servers run as ``python benchmarks/servers/NAME.py`` from the project's
environment or from ``benchmarks/.venv-peers``, and import this as
``_common`` from their own directory: so it uses the standard library only.
"""

from __future__ import annotations

import json
import resource
import socket
import sys

HOST = "127.0.0.1"

WELCOME = json.dumps(
    {"id": "welcome", "result": {"message": "Connected to bench", "tools": ["echo"]}}
)
"""The seed dialect's greeting, as the hand-written servers send it."""


def echo(message: str) -> dict[str, str]:
    """The hand-written servers' tool: echo a message back, without any sleep."""
    return {"echoed": message}


def raise_fd_limit() -> None:
    """Allow as many open files as the hard limit does (S4 opens 10,000 connections)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(port: int) -> None:
    """Tell the orchestrator the bound port (it reads this line from the log)."""
    print(f"[bench] listening on ws://{HOST}:{port}", file=sys.stderr, flush=True)


def announce_bound(sockets: tuple[socket.socket, ...] | list[socket.socket]) -> None:
    """Announce the port of a server's first listening socket."""
    announce(sockets[0].getsockname()[1])


def listening_socket(backlog: int) -> socket.socket:
    """A socket listening on a free port of ``HOST``, already announced.

    Made with ``IPPROTO_TCP``, as a server binding a host and port gets it from
    ``getaddrinfo``: asyncio sets ``TCP_NODELAY`` on the connections it accepts
    only then (uvloop always does). Without it, an answer written as a head and
    then a body waits out the client's delayed ACK, 40 ms, under Nagle's algorithm.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((HOST, 0))
    sock.listen(backlog)
    announce(sock.getsockname()[1])
    return sock
