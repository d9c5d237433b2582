"""MiniServer: a small WebSocket server on the sans-I/O core, for the client's tests.

It serves on ``anyio.create_tcp_listener`` and can misbehave on purpose:
refuse the upgrade, never answer the handshake, hang up, stop reading, drop the
connection mid-call, hold answers or send them out of order.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSListener

from securemcp import SecureMCP
from securemcp.protocol import ConnectionState, HandshakeRequest, ServerConnection, ToolCall

from .backend_server_helpers import add_basic_tools

LIMIT = 10  # seconds: every test ends well within this, or fails


def make_app() -> SecureMCP:
    app = SecureMCP("client-test")
    add_basic_tools(app, lambda: RuntimeError("kaboom"))

    # Tools the mini server handles itself (see MiniServer._run); their
    # functions exist only so that the app validates and lists them.
    @app.tool()
    def hang() -> None: ...

    @app.tool()
    def drop() -> None: ...

    @app.tool()
    def bye() -> None: ...

    @app.tool()
    def shout(count: int) -> None: ...

    @app.tool()
    def gather(value: int, expect: int) -> None: ...

    @app.tool()
    def late() -> None: ...

    @app.tool()
    def release() -> None: ...

    return app


@dataclass
class MiniServer:
    """A test server: ``handshake`` is "accept", "silent" (never answers), "eof" (hangs up)
    or "deaf" (accepts, then never reads again, so it never answers a close)."""

    app: SecureMCP = field(default_factory=make_app)
    reject: int | None = None
    handshake: str = "accept"
    requests: list[HandshakeRequest] = field(default_factory=list)
    _gathered: list[ToolCall] = field(default_factory=list)
    _late: list[ToolCall] = field(default_factory=list)

    async def _serve_one(self, stream: anyio.abc.ByteStream) -> None:
        conn = ServerConnection(self.app)
        lock = anyio.Lock()

        async def flush() -> None:
            async with lock:
                data = conn.data_to_send()
                if data:
                    await stream.send(data)

        async with stream, anyio.create_task_group() as tg:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    conn.receive_eof()
                else:
                    if self.handshake == "silent":
                        continue
                    if self.handshake == "eof":
                        break
                    conn.receive_data(data)
                for event in conn.events_received():
                    if isinstance(event, HandshakeRequest):
                        self.requests.append(event)
                        if self.reject is not None:
                            conn.reject(self.reject, b"go away")
                        else:
                            offered = event.subprotocols
                            conn.accept(offered[0] if offered else None)
                    elif isinstance(event, ToolCall):
                        tg.start_soon(self._run, conn, event, flush, stream)
                await flush()  # after a close, this sends our close reply
                if self.handshake == "deaf" and conn.state is ConnectionState.OPEN:
                    await anyio.sleep_forever()
                if conn.state is ConnectionState.CLOSED:
                    break
            tg.cancel_scope.cancel()

    async def _run(
        self,
        conn: ServerConnection,
        call: ToolCall,
        flush: Callable[[], Any],
        stream: anyio.abc.ByteStream,
    ) -> None:
        name = call.tool.name
        if name == "hang":
            await anyio.sleep_forever()
        elif name == "drop":
            await anyio.aclose_forcefully(stream)
            return
        elif name == "bye":
            conn.close(1001, "going away")
        elif name == "shout":
            for n in range(call.arguments["count"]):
                conn.notify("chat/message", {"n": n})
            conn.complete(call, call.arguments["count"])
        elif name == "gather":
            # Answer nothing until every expected call is here, then answer
            # them newest first: the client must match answers by id.
            self._gathered.append(call)
            if len(self._gathered) == call.arguments["expect"]:
                for held in reversed(self._gathered):
                    conn.complete(held, held.arguments["value"])
        elif name == "late":
            self._late.append(call)
        elif name == "release":
            for held in self._late:
                conn.complete(held, "too late")
            conn.complete(call, "released")
        else:
            try:
                result = call.tool.fn(**call.arguments)
                if call.tool.is_async:
                    result = await result
            except RuntimeError as exc:  # what make_app's failing tool raises
                conn.fail(call, exc)
            else:
                conn.complete(call, result)
        await flush()

    async def serve(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=0
        )
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        if tls is not None:
            listener = TLSListener(listener, tls, standard_compatible=False)
        async with listener:
            task_status.started(port)
            await listener.serve(self._serve_one)


@asynccontextmanager
async def running(
    server: MiniServer | None = None, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[MiniServer, str]]:
    """Run ``server`` (a plain :class:`MiniServer` by default); yield it and its URL."""
    server = server or MiniServer()
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: server.serve(tls=tls, task_status=task_status))
        yield server, f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"
        tg.cancel_scope.cancel()
