"""An MCP server made with the official Python SDK 2.x, over Streamable HTTP.

Run by the interpreter of the SDK 2.x environment (``tests/mcp2_env.py``), never
imported by the test suite: ``python sdk2_http_server.py [--token T] [--json]``.
It serves ``/mcp`` on 127.0.0.1 on a port the OS picks and prints
``URL http://127.0.0.1:<port>/mcp`` once it listens. Its tools: ``echo``,
``add`` (typed ints), ``count`` (reports progress), ``fail`` (raises) and
``forecast``, whose ``region`` is also sent as the ``Mcp-Param-Region`` header
(``x-mcp-header``, 2026-07-28).
With ``--token`` it demands ``Authorization: Bearer <token>``.
"""

# mypy: ignore-errors
# (it imports the SDK 2.x, which lives in .venv-mcp2, not in the project's environment)

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from typing import Annotated

import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field


class StaticTokens:
    """A TokenVerifier that accepts exactly one bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if token != self.token:
            return None
        return AccessToken(token=token, client_id="tests", scopes=[])


def build(token: str | None, port: int) -> MCPServer:
    auth_kwargs = {}
    if token is not None:
        auth_kwargs = {
            "token_verifier": StaticTokens(token),
            "auth": AuthSettings(
                issuer_url="http://127.0.0.1/issuer",
                resource_server_url=f"http://127.0.0.1:{port}/mcp",
            ),
        }
    server = MCPServer("sdk2-test-server", version="1.0", log_level="WARNING", **auth_kwargs)

    @server.tool()
    def echo(message: str) -> str:
        """Return the message."""
        return message

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    async def count(steps: int, ctx: Context) -> str:
        """Report progress ``steps`` times, then return."""
        for i in range(1, steps + 1):
            await ctx.report_progress(i, steps, f"step {i}")
            await asyncio.sleep(0.01)
        return f"counted {steps}"

    @server.tool()
    def fail(reason: str = "boom") -> str:
        """Raise."""
        raise RuntimeError(reason)

    @server.tool()
    def forecast(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], days: int = 1
    ) -> str:
        """The forecast for ``region``; ``region`` travels as a header too."""
        return f"{region}: {days} day(s) of sun"

    return server


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token")
    parser.add_argument("--json", action="store_true", help="JSON answers instead of SSE")
    parser.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id")
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build(args.token, port)
    app = server.streamable_http_app(json_response=args.json, stateless_http=args.stateless)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        if task.done():
            task.result()
            return
        await asyncio.sleep(0.01)
    print(f"URL http://127.0.0.1:{port}/mcp", flush=True)
    await task


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main())
