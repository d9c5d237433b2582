"""The official MCP Python SDK 2.x over Streamable HTTP: an ``MCPServer`` echo tool under uvicorn.

Runs from ``.venv-mcp2`` (``tests/mcp2_env.py``: mcp 2.3.0 and uvicorn), as
``tests/sdk2_http_server.py`` builds its server: ``MCPServer`` logging at
WARNING (its default INFO writes a line per request), its Streamable HTTP
app at ``/mcp`` in the two modes that make it answer like SecureMCP does,
``json_response`` (plain JSON, not an SSE stream) and ``stateless_http`` (no
session), under uvicorn at ``warning`` without its access log. uvicorn's
``loop="auto"`` picks uvloop where it is installed, asyncio otherwise.

The tool is the other benchmark servers' echo, ``{"echoed": message}``.
"""

# mypy: ignore-errors
# (it imports the SDK 2.x, which lives in .venv-mcp2, not in the project's environment)

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import uvicorn
from mcp.server.mcpserver import MCPServer

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import listening_socket, raise_fd_limit
else:
    from _common import listening_socket, raise_fd_limit

server = MCPServer("bench", log_level="WARNING")


@server.tool()
async def echo(message: str) -> dict[str, str]:
    """Echo a message back."""
    return {"echoed": message}


def main() -> None:
    """Bind a free port, announce it, serve until killed."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise_fd_limit()
    sock = listening_socket(4096)
    app = server.streamable_http_app(json_response=True, stateless_http=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
