"""What the broadcast tests share: the wait bound and a subscriber that stops reading.

``SlowReader`` is a raw client with a tiny receive buffer that joins a topic
and then reads nothing; ``test_redis_broker.py`` drops one the same way, while
``flood`` keeps a fast subscriber counting.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import anyio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from securemcp.transport import WebSocketClient

WAIT = 10.0
"""Upper bound of every wait: a failure ends the test instead of hanging it."""


class SlowReader:
    """A raw client that joins a topic and then stops reading (tiny receive buffer)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="localhost", target="/")))
        self.messages: list[Any] = []
        self.close_code: int | None = None
        self.accepted = False
        self._text = ""
        while not self.accepted:
            self._pump()

    def _pump(self) -> None:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                # wsproto hands over large messages in pieces.
                self._text += event.data
                if event.message_finished:
                    self.messages.append(json.loads(self._text))
                    self._text = ""
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
            else:
                assert isinstance(event, AcceptConnection)
                self.accepted = True
        if not data:
            raise EOFError

    def call(self, tool: str, **params: Any) -> Any:
        request = {
            "id": tool,
            "method": "invoke_tool",
            "params": {"tool_name": tool, "params": params},
        }
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(request))))
        while not any(m.get("id") == tool for m in self.messages):
            self._pump()
        return next(m for m in self.messages if m.get("id") == tool)["result"]

    def read_to_the_end(self) -> None:
        try:
            while self.close_code is None:
                self._pump()
        except (EOFError, OSError):
            pass
        self.sock.close()


async def flood(
    sender: WebSocketClient, listener: WebSocketClient, rounds: int, size: int, topic: str = "t"
) -> int:
    """``sender`` publishes ``rounds`` messages of ``size`` bytes; returns once ``listener``,
    counting its notifications meanwhile, heard that many (the caller bounds the wait)."""
    received = 0

    async def count() -> None:
        nonlocal received
        async for _ in listener.notifications():
            received += 1
            if received == rounds:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(count)
        for _ in range(rounds):
            await sender.invoke_tool("say_big", {"topic": topic, "size": size})
    return received
