"""The anyio server backend over real loopback sockets, on asyncio and trio.

The clients here are deliberately independent of the client backend: a tiny
one built on ``anyio.connect_tcp`` and the sans-I/O
:class:`~securemcp.protocol.ClientConnection` (it runs on both loops), raw
bytes where a misbehaving peer is needed, and the ``websockets`` library.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trustme
from anyio.abc import SocketAttribute

from securemcp import SecureMCP, ToolError
from securemcp.protocol import (
    ClientConnection,
    Connected,
    ConnectionClosed,
    ConnectionRejected,
    ErrorReceived,
    Event,
    Limits,
    PongReceived,
    ResponseReceived,
    Welcome,
)
from securemcp.transport import WebSocketTransport

from .helpers import serving

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
        except (anyio.EndOfStream, anyio.BrokenResourceError):
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


def demo_app() -> SecureMCP:
    app = SecureMCP("test-app")

    @app.tool()
    async def echo(message: str) -> dict[str, str]:
        """Echo a message back."""
        return {"echoed": message}

    @app.tool()
    def add(a: int, b: int) -> int:
        return a + b

    @app.tool()
    def boom() -> None:
        raise ValueError("boom")

    @app.tool()
    async def refuse() -> None:
        raise ToolError("not today", code=-31003)

    return app


# Round trips


@pytest.mark.anyio
async def test_every_builtin_round_trips() -> None:
    async with serving(quick(demo_app())) as port, connect(port) as client:
        assert client.welcome == Welcome("Connected to test-app", ("echo", "add", "boom", "refuse"))
        with anyio.fail_after(TIMEOUT):
            assert await client.request("ping") == ResponseReceived(1, {"pong": True})
            listed = await client.request("list_tools")
            assert isinstance(listed, ResponseReceived)
            assert [tool["name"] for tool in listed.result["tools"]] == [
                "echo",
                "add",
                "boom",
                "refuse",
            ]
            assert result_of(await client.invoke("echo", message="hi")) == {"echoed": "hi"}
            assert result_of(await client.invoke("add", a=2, b=3)) == 5
            missing = await client.invoke("nope")
            assert isinstance(missing, ErrorReceived)
            assert (missing.code, missing.message) == (-32601, "Tool not found: nope")


@pytest.mark.anyio
async def test_a_raising_tool_answers_32000_and_logs_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(quick(demo_app())) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            answer = await client.invoke("boom")
            assert isinstance(answer, ErrorReceived)
            assert (answer.code, answer.message) == (-32000, "Tool execution error: boom")
            chosen = await client.invoke("refuse")
            assert isinstance(chosen, ErrorReceived)
            assert (chosen.code, chosen.message) == (-31003, "not today")
            # The connection survives a failing tool.
            assert result_of(await client.invoke("add", a=1, b=1)) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "boom" in errors[0].getMessage()
    assert errors[0].exc_info is not None


# Concurrency


@pytest.mark.anyio
async def test_fifty_concurrent_calls_on_one_connection_are_correlated() -> None:
    app = SecureMCP("barrier")
    arrived = 0
    everyone_here = anyio.Event()

    @app.tool()
    async def wait_for_all(value: int) -> int:
        nonlocal arrived
        arrived += 1
        if arrived == 50:
            everyone_here.set()
        # No call can finish before all fifty run at once.
        await everyone_here.wait()
        return value * 10

    async with serving(quick(app)) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            ids = {client.conn.invoke_tool("wait_for_all", {"value": i}): i for i in range(50)}
            await client.flush()
            answers: dict[int | str, Any] = {}
            while len(answers) < 50:
                event = await client.next_event()
                assert isinstance(event, ResponseReceived), event
                answers[event.id] = event.result
    assert answers == {request_id: value * 10 for request_id, value in ids.items()}


@pytest.mark.anyio
async def test_twenty_clients_share_the_app_state() -> None:
    app = SecureMCP("counter")
    counter = 0

    @app.tool()
    async def increment() -> int:
        nonlocal counter
        counter += 1
        await anyio.lowlevel.checkpoint()  # let the other clients interleave
        return counter

    seen: list[int] = []

    async def one_client(port: int) -> None:
        async with connect(port) as client:
            for _ in range(10):
                answer = await client.invoke("increment")
                assert isinstance(answer, ResponseReceived)
                seen.append(answer.result)

    async with serving(quick(app)) as port:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(one_client, port)
    assert counter == 200
    assert len(seen) == 200
    assert max(seen) == 200


@pytest.mark.anyio
async def test_a_blocking_sync_tool_runs_in_a_thread_while_other_calls_proceed() -> None:
    app = SecureMCP("threads")
    release = threading.Event()
    loop_thread = threading.get_ident()

    @app.tool()
    def blocking() -> bool:
        # Blocks its thread until the test has had answers from other calls.
        assert release.wait(TIMEOUT)
        return threading.get_ident() != loop_thread

    @app.tool()
    async def fast() -> str:
        return "fast"

    async with serving(quick(app)) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            slow_id = client.conn.invoke_tool("blocking")
            await client.flush()
            assert result_of(await client.invoke("fast")) == "fast"
            assert result_of(await client.request("ping")) == {"pong": True}
            release.set()
            assert await client.answer(slow_id) == ResponseReceived(slow_id, True)


@pytest.mark.anyio
async def test_at_max_in_flight_the_server_stops_reading_until_a_call_completes() -> None:
    app = SecureMCP("backpressure")
    started = 0
    two_started = anyio.Event()
    release = anyio.Event()

    @app.tool()
    async def hold(n: int) -> int:
        nonlocal started
        started += 1
        if started == 2:
            two_started.set()
        await release.wait()
        return n

    transport = quick(app, limits=Limits(max_in_flight=2))
    async with serving(transport) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            ids = [client.conn.invoke_tool("hold", {"n": n}) for n in range(5)]
            client.conn.ping(b"behind the queue")
            await client.flush()
            await two_started.wait()
            # Paused, the server reads nothing more: no third call, no pong.
            with anyio.move_on_after(0.2):
                await client.next_event()
                pytest.fail("the server went on reading past max_in_flight")
            assert started == 2
            release.set()
            results = [await client.answer(request_id) for request_id in ids]
            assert await client.next_event() == PongReceived(b"behind the queue")
    assert [r.result for r in results if isinstance(r, ResponseReceived)] == [0, 1, 2, 3, 4]
    assert started == 5


@pytest.mark.anyio
async def test_control_frames_are_answered_while_calls_are_pending() -> None:
    app = SecureMCP("pending")
    release = anyio.Event()

    @app.tool()
    async def hold() -> str:
        await release.wait()
        return "done"

    async with serving(quick(app)) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            call_id = client.conn.invoke_tool("hold")
            client.conn.ping(b"beat")
            await client.flush()
            assert await client.next_event() == PongReceived(b"beat")
            release.set()
            assert await client.answer(call_id) == ResponseReceived(call_id, "done")


# Shutdown and peers that go away


@pytest.mark.anyio
async def test_shutdown_lets_calls_finish_cancels_the_rest_and_closes_1001() -> None:
    app = SecureMCP("shutdown")
    both_started = anyio.Event()
    running = 0
    release = anyio.Event()

    @app.tool()
    async def finishes() -> str:
        await _started()
        await release.wait()
        return "finished"

    @app.tool()
    async def never_finishes() -> str:
        await _started()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def _started() -> None:
        nonlocal running
        running += 1
        if running == 2:
            both_started.set()

    grace = 0.4
    transport = quick(app, shutdown_grace=grace)
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        async with connect(port) as client:
            with anyio.fail_after(TIMEOUT):
                done_id = client.conn.invoke_tool("finishes")
                stuck_id = client.conn.invoke_tool("never_finishes")
                await client.flush()
                await both_started.wait()
                stopping = anyio.current_time()
                transport.shutdown()
                release.set()
                assert await client.answer(done_id) == ResponseReceived(done_id, "finished")
                stuck = await client.answer(stuck_id)
                # Cancelled once the grace period is over, not before.
                waited = anyio.current_time() - stopping
                assert EARLY * grace <= waited < grace + 1.0, f"cancelled after {waited:.3f} s"
                assert isinstance(stuck, ErrorReceived)
                assert (stuck.code, stuck.message) == (-32800, "Server shutting down")
                closed = await client.closed()
                assert (closed.code, closed.reason) == (1001, "server shutting down")
        # serve() returns by itself after shutdown(): the task group ends.
    assert transport.open_connections == 0
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


@pytest.mark.anyio
async def test_cancelling_serve_drains_and_says_goodbye_with_1001() -> None:
    transport = quick(demo_app())
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        async with connect(port) as client:
            with anyio.fail_after(TIMEOUT):
                tg.cancel_scope.cancel()
                assert (await client.closed()).code == 1001


@pytest.mark.anyio
@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
async def test_a_client_dying_mid_call_cancels_it_and_the_server_stays_healthy(
    reset: bool,
) -> None:
    app = SecureMCP("dying")
    started = anyio.Event()
    cancelled = anyio.Event()

    @app.tool()
    async def long_call() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    async with serving(quick(app)) as port:
        with anyio.fail_after(TIMEOUT):
            async with connect(port) as client:
                client.conn.invoke_tool("long_call")
                await client.flush()
                await started.wait()
                if reset:
                    # Linger 0: closing sends a TCP RST instead of a FIN.
                    raw = client.stream.extra(SocketAttribute.raw_socket)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # The socket is closed without a closing handshake.
            await cancelled.wait()
            async with connect(port) as fresh:
                assert result_of(await fresh.request("ping")) == {"pong": True}


@pytest.mark.anyio
async def test_keepalive_closes_a_silent_peer_with_1011() -> None:
    interval, pong_timeout, close_timeout = 0.2, 0.4, 0.6
    transport = quick(
        demo_app(), ping_interval=interval, ping_timeout=pong_timeout, close_timeout=close_timeout
    )
    async with serving(transport) as port:
        with anyio.fail_after(TIMEOUT):
            # Before connecting: the server's timers cannot start earlier.
            opened = anyio.current_time()
            async with connect(port) as client:
                # Read without answering anything (not even pings) until the server hangs up.
                closing: ConnectionClosed | None = None
                closing_at = 0.0
                while True:
                    try:
                        data = await client.stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    client.conn.receive_data(data)
                    for event in client.conn.events_received():
                        if isinstance(event, ConnectionClosed) and closing is None:
                            closing, closing_at = event, anyio.current_time()
                dropped_at = anyio.current_time()
    assert closing is not None, "the server hung up without a close frame"
    assert (closing.code, closing.reason) == (1011, "keepalive ping timeout")
    # The close frame comes once a ping went unanswered for ping_timeout...
    waited = closing_at - opened
    assert waited >= EARLY * (interval + pong_timeout), f"closed after {waited:.3f} s"
    # ...and the connection is dropped once the silent peer let close_timeout
    # pass (timed from the close frame's arrival, a little after the timer started).
    lingered = dropped_at - closing_at
    assert EARLY * close_timeout <= lingered < close_timeout + 1.0, (
        f"dropped {lingered:.3f} s after the close frame"
    )


@pytest.mark.anyio
async def test_keepalive_spares_a_peer_that_answers_pings() -> None:
    app = SecureMCP("keepalive")

    @app.tool()
    async def nap() -> str:
        # Several ping intervals and pong deadlines pass during the call.
        await anyio.sleep(0.5)
        return "awake"

    transport = quick(app, ping_interval=0.05, ping_timeout=0.1)
    async with serving(transport) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            assert result_of(await client.invoke("nap")) == "awake"
            assert result_of(await client.request("ping")) == {"pong": True}


@pytest.mark.anyio
async def test_keepalive_waits_for_pongs_it_cannot_read_while_paused() -> None:
    app = SecureMCP("paused")

    @app.tool()
    async def nap() -> str:
        # Longer than a ping interval plus a pong deadline, at max_in_flight.
        await anyio.sleep(0.5)
        return "awake"

    transport = quick(app, limits=Limits(max_in_flight=1), ping_interval=0.05, ping_timeout=0.1)
    async with serving(transport) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            first = client.conn.invoke_tool("nap")
            second = client.conn.invoke_tool("nap")
            await client.flush()
            assert await client.answer(first) == ResponseReceived(first, "awake")
            assert await client.answer(second) == ResponseReceived(second, "awake")


async def still_open_and_silent(stream: anyio.abc.ByteStream, seconds: float) -> None:
    """Nothing arrives on ``stream`` for ``seconds``, and the server does not close it."""
    with anyio.move_on_after(seconds):
        try:
            data = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pytest.fail("the server closed a connection still in its handshake")
        pytest.fail(f"the server sent {data!r} to a connection still in its handshake")


@pytest.mark.anyio
async def test_handshake_timeout_closes_a_half_sent_request() -> None:
    timeout = 0.5
    transport = quick(demo_app(), handshake_timeout=timeout)
    async with serving(transport) as port:
        with anyio.fail_after(TIMEOUT):
            # Before connecting: the server's timer cannot start earlier.
            opened = anyio.current_time()
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
                # Dropped without a byte of answer (no HTTP status), at the
                # timeout: not before, and not long after.
                assert await read_until_closed(stream) == b""
                lived = anyio.current_time() - opened
            assert EARLY * timeout <= lived < timeout + 1.0, f"closed after {lived:.3f} s"
            async with connect(port) as client:
                assert result_of(await client.request("ping")) == {"pong": True}


@pytest.mark.anyio
async def test_shutdown_drops_a_connection_still_in_its_handshake() -> None:
    transport = quick(demo_app(), handshake_timeout=None)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            port = await tg.start(transport.serve, "127.0.0.1", 0)
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\n")
                # A ping on another connection proves the first one was accepted.
                async with connect(port) as client:
                    assert result_of(await client.request("ping")) == {"pong": True}
                # Without a handshake timeout the server waits, silent...
                await still_open_and_silent(stream, 0.3)
                stopping = anyio.current_time()
                transport.shutdown()
                # ...until it shuts down: then the connection is dropped
                # without a byte of answer, at once (no grace for handshakes).
                assert await read_until_closed(stream) == b""
                assert anyio.current_time() - stopping < 1.0


@pytest.mark.anyio
async def test_a_request_that_is_not_an_upgrade_gets_400() -> None:
    async with serving(quick(demo_app())) as port:
        with anyio.fail_after(TIMEOUT):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.anyio
async def test_past_max_connections_the_upgrade_is_refused_with_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.security")
    async with serving(quick(demo_app(), max_connections=1)) as port, connect(port) as first:
        with anyio.fail_after(TIMEOUT):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                second = RawClient(stream)
                second.conn.connect("localhost", "/")
                await second.flush()
                rejected = await second.next_event()
            assert isinstance(rejected, ConnectionRejected)
            assert rejected.status_code == 503
            assert result_of(await first.request("ping")) == {"pong": True}
    assert "refused with 503: max_connections reached" in caplog.text


# TLS and other clients


@contextmanager
def tls_contexts() -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    yield server, client


@pytest.mark.anyio
async def test_tls_round_trip(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="securemcp")
    with tls_contexts() as (server_ctx, client_ctx):
        transport = quick(demo_app(), ssl=server_ctx)
        async with serving(transport) as port:
            with anyio.fail_after(TIMEOUT):
                async with connect(port, ssl_context=client_ctx) as client:
                    assert result_of(await client.invoke("echo", message="secret")) == {
                        "echoed": "secret"
                    }
                # Plain text on a TLS port ends that connection only.
                async with await anyio.connect_tcp("127.0.0.1", port) as plain:
                    await plain.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    assert await read_until_closed(plain) == b""
                async with connect(port, ssl_context=client_ctx) as client:
                    assert result_of(await client.request("ping")) == {"pong": True}
    assert f"[WS] Starting WebSocket server on wss://127.0.0.1:{port}" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_websockets_library_client_talks_to_our_server() -> None:
    from websockets.asyncio.client import connect as ws_connect

    async with serving(quick(demo_app())) as port:
        with anyio.fail_after(TIMEOUT):
            async with ws_connect(f"ws://127.0.0.1:{port}") as ws:
                welcome = json.loads(await ws.recv())
                assert welcome == {
                    "id": "welcome",
                    "result": {
                        "message": "Connected to test-app",
                        "tools": ["echo", "add", "boom", "refuse"],
                    },
                }
                await ws.send(
                    json.dumps(
                        {
                            "id": "r1",
                            "method": "invoke_tool",
                            "params": {"tool_name": "add", "params": {"a": 20, "b": 22}},
                        }
                    )
                )
                assert json.loads(await ws.recv()) == {"id": "r1", "result": 42}
                latency = await ws.ping()
                await latency
            assert ws.close_code == 1000
