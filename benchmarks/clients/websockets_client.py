"""C1 with a hand-written ``websockets`` 17 client: the least a correct asyncio client does.

Runs from ``benchmarks/.venv-peers``, on asyncio or uvloop::

    benchmarks/.venv-peers/bin/python benchmarks/clients/websockets_client.py \\
        --url ws://127.0.0.1:PORT/ --server-pid PID --depth 64 --loop uvloop

One reader task hands each answer to the future waiting for its id; a call
sends its request and awaits its future. No timeout, no validation: the
reference the framework clients are measured against. ``websockets.connect``
runs with its defaults (it offers permessage-deflate; the C1 server declines
it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# Run as a script, this file finds its sibling module on sys.path[0]; mypy knows it by package.
if TYPE_CHECKING:
    from benchmarks.clients._common import Call, main
else:
    from _common import Call, main


class EchoClient:
    """Seed-dialect calls over one connection, answers matched to calls by id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.next_id = 0

    async def call(self, arguments: dict[str, str]) -> Any:
        """Invoke the echo tool; its result."""
        self.next_id += 1
        call_id = str(self.next_id)
        future = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        request = {"id": call_id, "method": "invoke_tool",
                   "params": {"tool_name": "echo", "params": arguments}}  # fmt: skip
        await self.ws.send(json.dumps(request))
        return await future

    async def read(self) -> None:
        """Hand every answer to its call (the welcome and unknown ids are dropped)."""
        try:
            async for message in self.ws:
                answer = json.loads(message)
                future = self.pending.pop(answer.get("id"), None)
                if future is None:
                    continue
                if "error" in answer:
                    future.set_exception(RuntimeError(answer["error"].get("message")))
                else:
                    future.set_result(answer.get("result"))
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(None, None))


@contextlib.asynccontextmanager
async def open_client(url: str) -> AsyncIterator[Call]:
    """One connection with its reader task; its echo call."""
    async with connect(url) as ws:
        client = EchoClient(ws)
        reader = asyncio.create_task(client.read())
        try:
            yield client.call
        finally:
            reader.cancel()


if __name__ == "__main__":
    main(open_client, f"websockets {version('websockets')}", ["asyncio", "uvloop"])
