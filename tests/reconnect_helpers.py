"""What the reconnecting client's tests stop and start: servers and a TCP relay on fixed ports.

:class:`Listening` runs anything that serves a port in its own cancel scope,
so that a test can stop it and start it again *on the same port*, as a
restarted server comes back. :class:`Relay` is a plain TCP relay in front of
the real server: cutting it ends every connection through it with no
WebSocket close frame, as a killed server or a network reset does, while the
server behind it (and the tools it is running) stays observable in the test.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from securemcp import ConnectionClosed, Context, SecureMCP
from securemcp.transport import Backoff, WebSocketClient, WebSocketTransport

FAST = Backoff(initial=0.01, maximum=0.05)
"""Delays short enough for tests, the same shape as the default's."""

Serve = Callable[..., Awaitable[Any]]
"""``serve(port, *, task_status)``: listen on ``port`` (0: any), report the bound port."""


class Listening:
    """One listener at a time on one port, stopped and started again at will."""

    def __init__(self, tg: anyio.abc.TaskGroup, serve: Serve) -> None:
        self._tg = tg
        self.serve = serve
        self.port = 0
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()

    async def start(self, serve: Serve | None = None) -> int:
        """Listen (with ``serve`` instead from now on, if given); the port, the same each time."""
        if serve is not None:
            self.serve = serve
        self.port = await self._tg.start(self._run)
        return self.port

    async def _run(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        self._stopped = stopped = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                await self.serve(self.port, task_status=task_status)
        finally:
            stopped.set()

    async def stop(self) -> None:
        """Stop listening and end what the listener runs; return once it is over."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()


class Relay(Listening):
    """Copies bytes between each client and the server at ``target`` until stopped."""

    def __init__(self, tg: anyio.abc.TaskGroup, target: int) -> None:
        super().__init__(tg, self._relay)
        self.target = target
        self._pipes: set[anyio.CancelScope] = set()
        self._closing_normally = False

    async def _relay(self, port: int, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        """Relay connections made to ``port`` until cancelled, then drop them all."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
        async with listener, anyio.create_task_group() as tg:
            task_status.started(listener.extra(SocketAttribute.local_port))
            await listener.serve(self._pipe, task_group=tg)

    async def _pipe(self, client: anyio.abc.SocketStream) -> None:
        try:
            server = await anyio.connect_tcp("127.0.0.1", self.target)
        except OSError:
            await client.aclose()  # the server is down: so is the connection through us
            return
        async with client, server:
            async with anyio.create_task_group() as tg:
                self._pipes.add(tg.cancel_scope)
                tg.start_soon(self._copy, server, client, tg.cancel_scope)
                await self._copy(client, server, tg.cancel_scope)
            self._pipes.discard(tg.cancel_scope)
            if self._closing_normally:
                # The closing handshake a server ending the session on purpose
                # starts: close frame 1000 (unmasked, server to client), then the
                # client's reply and its end of the TCP connection.
                await client.send(b"\x88\x02\x03\xe8")
                async for _ in client:
                    pass

    def close_normally(self) -> None:
        """Close every connection through the relay as a server does on purpose (code 1000)."""
        self._closing_normally = True
        for pipe in list(self._pipes):
            pipe.cancel()

    @staticmethod
    async def _copy(
        source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, both: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            both.cancel()


class Stalls:
    """Tool runs counted by name, and a gate the stalling tools wait at until a test opens it."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.entered = anyio.Event()
        self.gate = anyio.Event()

    async def stall(self, name: str) -> None:
        self.runs[name] += 1
        self.entered.set()
        await self.gate.wait()


def make_app(stalls: Stalls) -> SecureMCP:
    """An app with room-like topics and tools that stall until the test lets them finish."""
    app = SecureMCP("reconnect-test")

    @app.tool()
    def echo(message: str) -> str:
        return message

    @app.tool()
    def join(topic: str, ctx: Context) -> str:
        ctx.subscribe(topic)
        return topic

    @app.tool()
    def say(topic: str, text: str, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"text": text})

    @app.tool(annotations={"idempotentHint": True})
    async def store(key: str) -> str:
        """Write ``key`` (doing it twice changes nothing more)."""
        await stalls.stall("store")
        return f"stored {key}"

    @app.tool(annotations={"readOnlyHint": True})
    async def look(key: str) -> str:
        await stalls.stall("look")
        return f"looked {key}"

    @app.tool()
    async def append(item: str) -> str:
        """Append ``item`` (doing it twice appends it twice)."""
        await stalls.stall("append")
        return f"appended {item}"

    return app


async def settle(call: Callable[[], Awaitable[Any]], into: list[Any]) -> None:
    """Await ``call``; append its result, or the ConnectionClosed it raised, to ``into``."""
    try:
        into.append(await call())
    except ConnectionClosed as exc:
        into.append(exc)


async def cut_while_running(
    relay: Relay, stalls: Stalls, call: Callable[[], Awaitable[Any]], *, fails: bool
) -> Any:
    """Start ``call``; once its tool runs, cut the relay, let the tool go on, restore the relay.

    What the call ended with: its result or its ConnectionClosed. With ``fails``
    the call must end while the relay is still cut (nothing waited for a new
    connection), or the test's own deadline fails it.
    """
    outcome: list[Any] = []
    done = anyio.Event()

    async def run() -> None:
        await settle(call, outcome)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await stalls.entered.wait()
        await relay.stop()
        if fails:
            await done.wait()
        stalls.gate.set()
        await relay.start()
    return outcome[0]


async def cut_and_see(client: WebSocketClient, relay: Relay, stalls: Stalls) -> None:
    """Cut the relay; return once the client has seen it (a call in flight then fails).

    Without this a call made right after the cut might still go out on the
    dying connection, before the client read its end.
    """
    outcome: list[Any] = []
    probe = {"item": "probe"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(settle, lambda: client.invoke_tool("append", probe, timeout=None), outcome)
        await stalls.entered.wait()
        await relay.stop()
    assert isinstance(outcome[0], ConnectionClosed)


@asynccontextmanager
async def relayed_server(app: SecureMCP, **options: Any) -> AsyncIterator[tuple[Listening, Relay]]:
    """The app's server, and a relay in front of it: ``(server, relay)``; connect to the relay."""
    transport = WebSocketTransport(app, shutdown_grace=0, **options)
    async with anyio.create_task_group() as tg:
        server = Listening(
            tg,
            lambda port, task_status: transport.serve("127.0.0.1", port, task_status=task_status),
        )
        await server.start()
        relay = Relay(tg, server.port)
        await relay.start()
        yield server, relay
        tg.cancel_scope.cancel()


def url(listening: Listening) -> str:
    """The ``ws://`` URL of what ``listening`` serves."""
    return f"ws://127.0.0.1:{listening.port}"


@contextmanager
def client_log(handler: logging.Handler) -> Iterator[None]:
    """``handler`` hears the client's INFO records (its failed attempts) inside the block."""
    logger = logging.getLogger("securemcp.client")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
