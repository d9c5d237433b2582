"""What the tests of MCP Streamable HTTP serving share: the app, the transport, raw HTTP.

The raw client sends bytes as a hostile or minimal peer would and reads answers
framed by Content-Length; ``sdk_client`` runs the official SDK 2.x client
(``tests/sdk2_http_client.py``) with the SDK 2.x environment's interpreter.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.abc
from pydantic import Field

from securemcp import Principal, Progress, SecureMCP, SecurityPolicy, StaticTokenAuthenticator
from securemcp.transport import WebSocketTransport

LIMIT = 20
"""Seconds any one test may take on the network before it is a failure."""
CLIENT_SCRIPT = Path(__file__).with_name("sdk2_http_client.py")
ADMIN = "admin-token-0123456789"
USER = "user-token-0123456789"
MODERN = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def make_app(hang_events: tuple[anyio.Event, anyio.Event] | None = None) -> SecureMCP:
    """The test tools; ``hang_events`` are set when ``hang`` starts and when it is cancelled."""
    app = SecureMCP("http-test-server", "1.0")

    @app.tool()
    async def echo(message: str) -> str:
        """Return the message (runs inline: it never suspends)."""
        return message

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers (a sync tool: runs in a worker thread)."""
        return a + b

    @app.tool()
    async def count(steps: int, progress: Progress) -> str:
        """Report progress ``steps`` times, then return."""
        for i in range(1, steps + 1):
            progress.report(i, steps, f"step {i}")
            await anyio.sleep(0.01)
        return f"counted {steps}"

    @app.tool()
    async def hang() -> str:
        """Wait until cancelled."""
        if hang_events is not None:
            hang_events[0].set()
        try:
            await anyio.sleep_forever()
        finally:
            if hang_events is not None:
                hang_events[1].set()
        return "never"  # pragma: no cover

    @app.tool(scopes={"admin"})
    def purge() -> str:
        return "purged"

    @app.tool()
    async def forecast(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], days: int = 1
    ) -> str:
        """The forecast for ``region``, which a 2026-07-28 call sends as a header too."""
        return f"{region}: {days} day(s) of sun"

    return app


def transport(app: SecureMCP | None = None, **options: Any) -> WebSocketTransport:
    options.setdefault("shutdown_grace", 0.5)
    options.setdefault("close_timeout", 1.0)
    return WebSocketTransport(make_app() if app is None else app, **options)


def token_policy(**options: Any) -> SecurityPolicy:
    authenticator = StaticTokenAuthenticator(
        {ADMIN: Principal("alice", frozenset({"admin"})), USER: Principal("bob")}
    )
    return SecurityPolicy(authenticator=authenticator, **options)


# Raw HTTP


def routing_headers(body: bytes) -> str:
    """The 2026-07-28 routing headers a client mirrors from an enveloped request's body."""
    try:
        message = json.loads(body)
    except ValueError:
        return ""
    params = message.get("params") if isinstance(message, dict) else None
    if not isinstance(params, dict) or "_meta" not in params:
        return ""
    version = params["_meta"]["io.modelcontextprotocol/protocolVersion"]
    headers = f"MCP-Protocol-Version: {version}\r\nMcp-Method: {message['method']}\r\n"
    if message["method"] == "tools/call" and isinstance(params.get("name"), str):
        headers += f"Mcp-Name: {params['name']}\r\n"
    return headers


def post(body: bytes | str, headers: str = "", path: str = "/mcp", *, route: bool = True) -> bytes:
    """A POST of ``body``; an enveloped request gets its routing headers unless ``route=False``."""
    data = body.encode() if isinstance(body, str) else body
    if route:
        headers = routing_headers(data) + headers
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\n{headers}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def rpc(method: str, request_id: int | None = 1, **params: Any) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        message["id"] = request_id
    return json.dumps(message)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """A raw TCP client reading HTTP answers framed by Content-Length."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.closed = False

    async def _more(self) -> None:
        try:
            data = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            self.closed = True
            raise
        self.buffer += data

    async def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            await self._more()
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        return Answer(int(lines[0].split(" ")[1]), headers, rest[:length])

    async def until_closed(self) -> bytes:
        try:
            while True:
                await self._more()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return self.buffer


@asynccontextmanager
async def raw(port: int) -> AsyncIterator[Raw]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        yield Raw(stream)


async def one(port: int, data: bytes) -> Answer:
    async with raw(port) as client:
        await client.stream.send(data)
        return await client.answer()


# The official SDK 2.x client


async def sdk_client(python: Path, url: str, *args: str) -> dict[str, Any]:
    result = await anyio.run_process([str(python), str(CLIENT_SCRIPT), url, *args], check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace"))
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    output: dict[str, Any] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return output
