"""Test helpers for the sans-I/O core: an in-memory connection pair and exact frames.

:class:`ConnectionPair` wires a :class:`ClientConnection` to a
:class:`ServerConnection` with no socket in between, in the spirit of h11's
test helper. The frame functions build WebSocket frames byte by byte (RFC 6455
§5.2) so that tests can send exactly what a hostile or odd client would.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Generator, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from pydantic import BaseModel, Field

from securemcp import InvalidParams, RPCError, SecureMCP, ToolError
from securemcp.protocol import (
    ClientConnection,
    Event,
    HandshakeRequest,
    Limits,
    RequestId,
    ServerConnection,
    ToolCall,
)
from securemcp.transport import WebSocketTransport

__all__ = [
    "MASK",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "UPGRADE_REQUEST",
    "ConnectionPair",
    "ToolSuspended",
    "client_frame",
    "close_payload",
    "demo_app",
    "open_server",
    "parse_server_messages",
    "run_tool",
    "server_frame",
    "split_server_frames",
    "text_frame",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MASK = b"\x37\xfa\x21\x3d"
"""The masking key every test frame uses (any four bytes do; fixed keeps bytes exact)."""

UPGRADE_REQUEST = (
    b"GET /mcp HTTP/1.1\r\n"
    b"Host: localhost\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
"""A minimal valid opening handshake, as a browser would send it."""


class _YieldOnce:
    """An awaitable that gives control back once, as ``await anyio.sleep(0)`` does."""

    def __await__(self) -> Generator[None, None, None]:
        yield


class Point(BaseModel):
    """A nested model for tools to take."""

    x: int
    y: int


def demo_app(name: str = "demo") -> SecureMCP:
    """An app with one tool for each behaviour the core tests exercise."""
    app = SecureMCP(name, "Tools for the core tests.")

    @app.tool()
    async def echo(message: str) -> dict[str, str]:
        """Echo a message back."""
        await _YieldOnce()
        return {"echoed": message}

    @app.tool
    def add(a: int, b: Annotated[int, Field(ge=0)] = 0) -> int:
        """Add two integers."""
        return a + b

    @app.tool(name="norm", description="Squared length of a point.")
    def squared_length(point: Point) -> int:
        return point.x**2 + point.y**2

    @app.tool()
    def boom() -> None:
        raise RuntimeError("kaput")

    @app.tool()
    async def refuse(reason: str) -> None:
        raise ToolError(f"refused: {reason}", data={"reason": reason})

    @app.tool()
    def picky() -> None:
        raise InvalidParams("picky says no")

    @app.tool()
    def custom() -> None:
        raise RPCError("teapot", code=-31418, data=[1, 2])

    @app.tool()
    def opaque() -> object:
        return object()

    @app.tool()
    def not_a_number() -> float:
        return float("nan")

    return app


class ToolSuspended(RuntimeError):
    """An async tool really waited for something; it needs an event loop to finish."""


def _length_header(first: int, mask_bit: int, length: int) -> bytes:
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def client_frame(
    payload: bytes,
    opcode: int = OP_TEXT,
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    announced_length: int | None = None,
) -> bytes:
    """One frame as a client sends it: masked with :data:`MASK` unless ``masked`` is false.

    ``announced_length`` puts a different payload length in the header than the
    payload given, to build the head of a frame whose body never arrives.
    """
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload) if announced_length is None else announced_length
    if not masked:
        return _length_header(first, 0, length) + payload
    body = bytes(byte ^ MASK[index % 4] for index, byte in enumerate(payload))
    return _length_header(first, 0x80, length) + MASK + body


def server_frame(payload: bytes, opcode: int = OP_TEXT, *, fin: bool = True) -> bytes:
    """One unmasked frame as a server sends it."""
    return _length_header((0x80 if fin else 0) | opcode, 0, len(payload)) + payload


def text_frame(message: Any) -> bytes:
    """A masked client text frame carrying ``message`` as compact JSON (a ``str`` as is)."""
    text = message if isinstance(message, str) else json.dumps(message, separators=(",", ":"))
    return client_frame(text.encode())


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the code in network order, then the UTF-8 reason."""
    return struct.pack("!H", code) + reason.encode()


def open_server(
    app: SecureMCP, *, limits: Limits | None = None, welcome: bool = True
) -> ServerConnection:
    """A server connection past its handshake, its output (101 and welcome) drained."""
    server = ServerConnection(app, limits=limits)
    server.receive_data(UPGRADE_REQUEST)
    events = server.events_received()
    assert len(events) == 1
    assert isinstance(events[0], HandshakeRequest)
    server.accept(welcome=welcome)
    server.data_to_send()
    return server


def run_tool(call: ToolCall) -> Any:
    """Run ``call``'s tool to completion without an event loop and return its result.

    An async tool's coroutine is stepped by hand: a tool that only yields
    control (``await anyio.sleep(0)`` style bare yields) finishes; one that
    waits on a real future raises :class:`ToolSuspended`. Exceptions from the
    tool propagate.
    """
    result = call.tool.fn(**call.arguments)
    if not call.tool.is_async:
        return result
    steps = result.__await__()
    try:
        for _ in range(1000):
            if steps.send(None) is not None:
                raise ToolSuspended(f"tool {call.tool.name!r} waited on an event loop object")
        raise ToolSuspended(f"tool {call.tool.name!r} did not finish in 1000 steps")
    except StopIteration as finished:
        return finished.value
    finally:
        steps.close()


class ConnectionPair:
    """A client core and a server core joined in memory.

    Bytes move only when :meth:`pump` runs, so a test decides exactly when each
    side sees what the other wrote. Events accumulate in :attr:`server_events`
    (tool calls also in :attr:`calls`, until answered) and
    :attr:`client_events`; tests usually read them with :meth:`take_client_events`.
    """

    def __init__(
        self,
        app: SecureMCP,
        *,
        limits: Limits | None = None,
        client_limits: Limits | None = None,
    ) -> None:
        self.app = app
        self.server = ServerConnection(app, limits=limits)
        self.client = ClientConnection(limits=client_limits)
        self.server_events: list[Event] = []
        self.client_events: list[Event] = []
        self.calls: list[ToolCall] = []
        """Tool calls handed out by the server and not yet answered through this pair."""

    # Moving bytes

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything left to write."""
        while True:
            to_server = self.client.data_to_send()
            if to_server:
                self.server.receive_data(to_server)
            self._collect()
            to_client = self.server.data_to_send()
            if to_client:
                self.client.receive_data(to_client)
            self._collect()
            if not to_server and not to_client:
                return

    def _collect(self) -> None:
        for event in self.server.events_received():
            self.server_events.append(event)
            if isinstance(event, ToolCall):
                self.calls.append(event)
        self.client_events.extend(self.client.events_received())

    def take_client_events(self) -> list[Event]:
        """The client's events gathered so far, emptying the list."""
        events, self.client_events = self.client_events, []
        return events

    def take_server_events(self) -> list[Event]:
        """The server's events gathered so far, emptying the list (``calls`` is kept)."""
        events, self.server_events = self.server_events, []
        return events

    # Life cycle

    def open(
        self,
        *,
        subprotocols: Iterable[str] = (),
        extra_headers: Iterable[tuple[str, str]] = (),
        welcome: bool = True,
    ) -> HandshakeRequest:
        """Run the opening handshake, accept it and return the server's request event."""
        self.client.connect(
            "localhost", "/mcp", subprotocols=subprotocols, extra_headers=extra_headers
        )
        self.pump()
        requests = [e for e in self.take_server_events() if isinstance(e, HandshakeRequest)]
        assert len(requests) == 1
        self.server.accept(welcome=welcome)
        self.pump()
        return requests[0]

    # Tool calls

    def answer(self, call: ToolCall) -> None:
        """Run ``call`` synchronously and answer it with ``complete`` or ``fail``."""
        self.calls.remove(call)
        try:
            result = run_tool(call)
        except ToolSuspended:
            raise
        except Exception as exc:  # noqa: BLE001 - a tool's failure is the answer under test
            self.server.fail(call, exc)
        else:
            self.server.complete(call, result)

    def answer_all(self) -> None:
        """Answer every tool call, including calls unpaused by earlier answers."""
        while self.calls:
            self.answer(self.calls[0])
            self.pump()

    def request(self, method: str, params: Any = None) -> Event:
        """Send one request, run what it asks for, and return the client's only event."""
        request_id = self.client.send_request(method, params)
        return self._answer_for(request_id)

    def invoke(self, tool_name: str, arguments: dict[str, Any] | None = None) -> Event:
        """Call a tool by name and return the client's only event (the answer)."""
        request_id = self.client.invoke_tool(tool_name, arguments)
        return self._answer_for(request_id)

    def _answer_for(self, request_id: RequestId) -> Event:
        self.pump()
        self.answer_all()
        events = self.take_client_events()
        assert len(events) == 1, events
        assert getattr(events[0], "id", None) == request_id
        return events[0]

    def send_raw(self, message: Any) -> list[dict[str, Any]]:
        """Send ``message`` (JSON-encoded unless a ``str``) as one text frame to the server.

        Tool calls it causes are run; returns every JSON message the server wrote
        back, parsed. The client core is bypassed, so anything goes.
        """
        self.server.receive_data(text_frame(message))
        self._collect()
        while self.calls:
            self.answer(self.calls[0])
            self._collect()
        return parse_server_messages(self.server.data_to_send())


def split_server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split what a server wrote into (opcode, payload) pairs; its frames are never masked."""
    frames: list[tuple[int, bytes]] = []
    while data:
        assert data[0] & 0x80, "the server does not fragment"
        assert not data[1] & 0x80, "server frames are not masked"
        opcode = data[0] & 0x0F
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        assert len(data) >= offset + length, "truncated frame"
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


def parse_server_messages(data: bytes) -> list[dict[str, Any]]:
    """Split unfragmented server text frames and parse each as JSON."""
    messages: list[dict[str, Any]] = []
    for opcode, payload in split_server_frames(data):
        assert opcode == OP_TEXT, f"expected a text frame, got opcode {opcode:#x}"
        messages.append(json.loads(payload))
    return messages


@asynccontextmanager
async def serving(transport: WebSocketTransport) -> AsyncIterator[int]:
    """Run ``transport`` on a free loopback port for the block; yields the port."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        yield port
        tg.cancel_scope.cancel()
