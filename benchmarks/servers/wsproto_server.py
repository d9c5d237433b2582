"""The ceiling of a wsproto design: bare wsproto on an ``asyncio.Protocol``, JSON echo.

No task per connection or per call, no locks, no validation: bytes in,
``wsproto`` events, ``json`` both ways, bytes out, all inside
``data_received``. Runs from either environment (only wsproto is needed).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.servers._common import HOST, WELCOME, announce_bound, echo, raise_fd_limit
else:
    from _common import HOST, WELCOME, announce_bound, echo, raise_fd_limit


class EchoProtocol(asyncio.Protocol):
    """One connection: the WebSocket handshake, then JSON requests answered inline."""

    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.transport: asyncio.Transport | None = None
        self.parts: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        out = bytearray()
        for event in self.ws.events():
            out += self.handle(event)
        if out and self.transport is not None:
            self.transport.write(bytes(out))

    def handle(self, event: Event) -> bytes:
        ws = self.ws
        if isinstance(event, TextMessage):
            self.parts.append(event.data)
            if not event.message_finished:
                return b""
            text, self.parts = "".join(self.parts), []
            request = json.loads(text)
            params = request.get("params") or {}
            result = echo(**params.get("params", {}))
            return ws.send(TextMessage(json.dumps({"id": request.get("id"), "result": result})))
        if isinstance(event, Request):
            return ws.send(AcceptConnection()) + ws.send(TextMessage(WELCOME))
        if isinstance(event, Ping):
            return ws.send(event.response())
        if isinstance(event, CloseConnection):
            reply = ws.send(event.response())
            if self.transport is not None:
                self.transport.write(reply)
                self.transport.close()
            return b""
        return b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def main() -> None:
    """Serve until killed."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, HOST, 0, backlog=4096)
    announce_bound(server.sockets)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(main())
