"""The anyio server backend over real loopback sockets, on asyncio and trio: calls.

The clients here are deliberately independent of the client backend: a tiny
one built on ``anyio.connect_tcp`` and the sans-I/O
:class:`~securemcp.protocol.ClientConnection` (``tests/backend_server_helpers.py``),
and the ``websockets`` library. Round trips, concurrency and backpressure, TLS.
Shutdown, timers and peers that go away are in ``test_backend_server_shutdown.py``.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trustme

from securemcp import SecureMCP
from securemcp.protocol import ErrorReceived, Limits, PongReceived, ResponseReceived, Welcome

from .backend_server_helpers import TIMEOUT, connect, demo_app, quick, read_until_closed, result_of
from .helpers import serving

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
