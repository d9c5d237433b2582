"""A minimal WebSocket client on both loops, for the tests of the server backend.

Built on ``anyio.connect_tcp`` and the sans-I/O
:class:`~securemcp.protocol.ClientConnection`, independent of the client backend;
with the app and transport options those tests share.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel

from securemcp import SecureMCP, ToolError
from securemcp.protocol import (
    ClientConnection,
    Connected,
    ConnectionClosed,
    ErrorReceived,
    Event,
    ResponseReceived,
    Welcome,
)
from securemcp.transport import WebSocketTransport

TIMEOUT = 10.0
"""Bound of every test's network activity; generous, tests finish far sooner."""
EARLY = 0.9
"""A timer may not fire before this fraction of its duration (scheduling leeway);
one firing at half its duration fails."""


# A minimal client on both loops


class RawClient:
    """A WebSocket client made of an anyio stream and a ``ClientConnection``."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.conn = ClientConnection()
        self.events: deque[Event] = deque()
        self.welcome: Welcome | None = None

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send(data)

    async def next_event(self) -> Event:
        """The next event; reading also answers the server's pings and close."""
        while not self.events:
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                self.conn.receive_eof()
            else:
                self.conn.receive_data(data)
            self.events.extend(self.conn.events_received())
            await self.flush()
        return self.events.popleft()

    async def answer(self, request_id: int) -> ResponseReceived | ErrorReceived:
        """Read until the answer to ``request_id``; other answers are kept for later."""
        skipped: list[Event] = []
        try:
            while True:
                event = await self.next_event()
                if isinstance(event, ResponseReceived | ErrorReceived) and event.id == request_id:
                    return event
                assert not isinstance(event, ConnectionClosed), event
                skipped.append(event)
        finally:
            self.events.extendleft(reversed(skipped))

    async def request(self, method: str, params: Any = None) -> ResponseReceived | ErrorReceived:
        request_id = self.conn.send_request(method, params)
        await self.flush()
        return await self.answer(request_id)

    async def invoke(self, tool: str, **arguments: Any) -> ResponseReceived | ErrorReceived:
        return await self.request("invoke_tool", {"tool_name": tool, "params": arguments})

    async def closed(self) -> ConnectionClosed:
        """Read until the connection is over."""
        while True:
            event = await self.next_event()
            if isinstance(event, ConnectionClosed):
                return event


async def read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    received = b""
    while True:
        try:
            received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return received


def result_of(answer: Event) -> Any:
    """The result of a successful answer (anything else fails the test)."""
    assert isinstance(answer, ResponseReceived), answer
    return answer.result


@asynccontextmanager
async def connect(
    port: int, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RawClient]:
    """An open connection to the server on ``port``, past its welcome."""
    if ssl_context is None:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp("127.0.0.1", port)
    else:
        stream = await anyio.connect_tcp(
            "127.0.0.1",
            port,
            ssl_context=ssl_context,
            tls_hostname="localhost",
            tls_standard_compatible=False,
        )
    async with stream:
        client = RawClient(stream)
        client.conn.connect("localhost", "/")
        await client.flush()
        assert isinstance(await client.next_event(), Connected)
        welcome = await client.next_event()
        assert isinstance(welcome, Welcome)
        client.welcome = welcome
        yield client


def quick(app: SecureMCP, **options: Any) -> WebSocketTransport:
    """A transport whose shutdown never waits long for a misbehaving test."""
    options.setdefault("shutdown_grace", 2.0)
    options.setdefault("close_timeout", 2.0)
    return WebSocketTransport(app, **options)


def add_basic_tools(app: SecureMCP, failure: Callable[[], Exception]) -> None:
    """Register ``echo``, ``add`` and ``boom`` (which raises ``failure()``) on ``app``."""

    @app.tool()
    async def echo(message: str) -> dict[str, str]:
        """Echo a message back."""
        return {"echoed": message}

    @app.tool()
    def add(a: int, b: int) -> int:
        return a + b

    @app.tool()
    def boom() -> None:
        raise failure()


def demo_app() -> SecureMCP:
    app = SecureMCP("test-app")
    add_basic_tools(app, lambda: ValueError("boom"))

    @app.tool()
    async def refuse() -> None:
        raise ToolError("not today", code=-31003)

    return app
