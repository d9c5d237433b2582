"""MCP over WebSocket against independent implementations, over real loopback sockets.

- The official MCP Python SDK's WebSocket client (``mcp.client.websocket``)
  against our server, run on asyncio and on trio (in a thread with its own
  loop). That client is built on the ``websockets`` asyncio API, so it runs on
  asyncio only: those tests pin ``anyio_backend`` to asyncio.
- Our client against the SDK's WebSocket server (``mcp.server.websocket`` under
  uvicorn, in a subprocess), on asyncio and trio.
- Our client against our server, both dialects.
- A client of the original SecureMCP WebSocket transport (seed dialect, raw
  frames as it sent them) against our server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import websockets
from anyio.from_thread import start_blocking_portal
from mcp import ClientSession
from mcp.client.websocket import websocket_client
from mcp.shared.exceptions import McpError
from mcp.types import CancelledNotification, CancelledNotificationParams, ClientNotification
from pydantic import BaseModel

from securemcp import Context, InvalidParams, Progress, SecureMCP, ToolError
from securemcp.backends.mcp_client import ProgressUpdate
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION
from securemcp.transport import WebSocketClient, WebSocketTransport

LIMIT = 20
"""Seconds any one test may take on the network before it is a failure."""

SDK_CLIENT = pytest.mark.filterwarnings(
    "ignore:The WebSocket client transport is deprecated:DeprecationWarning"
)
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""The SDK's WebSocket client needs asyncio (websockets.asyncio); it cannot run on trio."""

UNICODE = "héllo wörld ✓ 🌍 \u202e مرحبا"


class Address(BaseModel):
    city: str
    tags: list[str]


class Person(BaseModel):
    name: str
    address: Address


@dataclass
class Cancellations:
    """What the server's blocking tool saw, shared with the test's thread."""

    ids: list[str | int] = field(default_factory=list)
    seen: threading.Event = field(default_factory=threading.Event)


def interop_app(cancellations: Cancellations) -> SecureMCP:
    app = SecureMCP("interop", "Tools for interop tests.", version="1.2.3")

    @app.tool(title="Echo", annotations={"readOnlyHint": True})
    async def echo(message: str) -> dict[str, str]:
        """Echo a message back."""
        await anyio.lowlevel.checkpoint()
        return {"echoed": message}

    @app.tool()
    def describe(person: Person) -> str:
        """Describe a person (nested arguments)."""
        return f"{person.name} lives in {person.address.city} ({', '.join(person.address.tags)})"

    @app.tool()
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        await anyio.lowlevel.checkpoint()
        return a + b

    @app.tool()
    def fail() -> None:
        """Always fails."""
        raise RuntimeError("nope")

    @app.tool()
    def count(n: int, progress: Progress) -> int:
        """Report progress n times from a worker thread, then return n."""
        for step in range(1, n + 1):
            progress.report(step, n, f"step {step}")
        return n

    @app.tool()
    async def block(progress: Progress, ctx: Context) -> None:
        """Announce the call's id as progress, then wait until cancelled."""
        progress.report(1, message=json.dumps(ctx.request_id))
        try:
            await anyio.sleep_forever()
        finally:
            cancellations.ids.append(ctx.request_id)
            cancellations.seen.set()

    @app.tool()
    def cancelled() -> list[str | int]:
        """The ids of the cancelled ``block`` calls, once there is one (5 s at most)."""
        cancellations.seen.wait(5)
        return cancellations.ids

    return app


@dataclass
class RunningServer:
    url: str
    cancellations: Cancellations


@pytest.fixture(params=["asyncio", "trio"])
def our_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Our server on its own event loop (asyncio or trio) in a thread."""
    cancellations = Cancellations()
    transport = WebSocketTransport(interop_app(cancellations), ping_interval=None)
    with start_blocking_portal(request.param) as portal:
        future, port = portal.start_task(transport.serve, "127.0.0.1", 0)
        try:
            yield RunningServer(f"ws://127.0.0.1:{port}/mcp", cancellations)
        finally:
            portal.call(transport.shutdown)
            future.result(timeout=LIMIT)


@asynccontextmanager
async def sdk_session(url: str) -> AsyncIterator[ClientSession]:
    async with websocket_client(url) as (read, write), ClientSession(read, write) as session:
        yield session


# The official SDK's client against our server


@SDK_CLIENT
@ASYNCIO_ONLY
@pytest.mark.anyio
async def test_sdk_client_initializes_and_lists_tools(our_server: RunningServer) -> None:
    with anyio.fail_after(LIMIT):
        async with sdk_session(our_server.url) as session:
            init = await session.initialize()
            listed = await session.list_tools()
    assert init.protocolVersion == LATEST_PROTOCOL_VERSION
    assert init.serverInfo.name == "interop"
    assert init.serverInfo.version == "1.2.3"
    assert init.instructions == "Tools for interop tests."
    assert init.capabilities.tools is not None
    tools = {tool.name: tool for tool in listed.tools}
    assert list(tools) == ["echo", "describe", "add", "fail", "count", "block", "cancelled"]
    echo = tools["echo"]
    assert echo.title == "Echo"
    assert echo.description == "Echo a message back."
    assert echo.annotations is not None
    assert echo.annotations.readOnlyHint is True
    assert echo.inputSchema["properties"]["message"]["type"] == "string"
    assert echo.inputSchema["required"] == ["message"]
    assert echo.outputSchema == {"type": "object", "additionalProperties": {"type": "string"}}
    person = tools["describe"].inputSchema
    assert person["properties"]["person"]["$ref"] == "#/$defs/Person"
    assert set(person["$defs"]) == {"Person", "Address"}
    assert tools["add"].outputSchema is None
    assert tools["count"].inputSchema["properties"].keys() == {"n"}


@SDK_CLIENT
@ASYNCIO_ONLY
@pytest.mark.anyio
async def test_sdk_client_calls_tools(our_server: RunningServer) -> None:
    person = {"name": "Zoë", "address": {"city": "Zürich", "tags": ["ä", "✓"]}}
    with anyio.fail_after(LIMIT):
        async with sdk_session(our_server.url) as session:
            await session.initialize()
            echoed = await session.call_tool("echo", {"message": UNICODE})
            described = await session.call_tool("describe", {"person": person})
            invalid = await session.call_tool("add", {"a": "x", "b": 1})
            failed = await session.call_tool("fail")
            with pytest.raises(McpError) as unknown:
                await session.call_tool("no_such_tool", {})
    assert not echoed.isError
    assert echoed.structuredContent == {"echoed": UNICODE}
    assert json.loads(echoed.content[0].text) == {"echoed": UNICODE}  # type: ignore[union-attr]
    assert described.content[0].text == "Zoë lives in Zürich (ä, ✓)"  # type: ignore[union-attr]
    assert invalid.isError
    assert "a: Input should be a valid integer" in invalid.content[0].text  # type: ignore[union-attr]
    assert failed.isError
    assert failed.content[0].text == "Tool execution error: nope"  # type: ignore[union-attr]
    assert unknown.value.error.code == -32602


@SDK_CLIENT
@ASYNCIO_ONLY
@pytest.mark.anyio
async def test_sdk_client_runs_twenty_calls_at_once(our_server: RunningServer) -> None:
    results: dict[int, str] = {}

    async def one(session: ClientSession, index: int) -> None:
        result = await session.call_tool("add", {"a": index, "b": 1000})
        results[index] = result.content[0].text  # type: ignore[union-attr]

    with anyio.fail_after(LIMIT):
        async with sdk_session(our_server.url) as session:
            await session.initialize()
            async with anyio.create_task_group() as tg:
                for index in range(20):
                    tg.start_soon(one, session, index)
    assert results == {index: str(index + 1000) for index in range(20)}


@SDK_CLIENT
@ASYNCIO_ONLY
@pytest.mark.anyio
async def test_sdk_client_gets_progress_from_a_sync_tool(our_server: RunningServer) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    with anyio.fail_after(LIMIT):
        async with sdk_session(our_server.url) as session:
            await session.initialize()
            result = await session.call_tool("count", {"n": 4}, progress_callback=on_progress)
    assert result.content[0].text == "4"  # type: ignore[union-attr]
    assert updates == [(step, 4, f"step {step}") for step in range(1, 5)]


@SDK_CLIENT
@ASYNCIO_ONLY
@pytest.mark.anyio
async def test_sdk_client_cancels_a_call(our_server: RunningServer) -> None:
    announced: list[str | int] = []
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        announced.append(json.loads(message or "null"))
        started.set()

    with anyio.fail_after(LIMIT):
        async with sdk_session(our_server.url) as session:
            await session.initialize()
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(session.call_tool, "block", progress_callback=on_progress))
                await started.wait()
                [request_id] = announced
                params = CancelledNotificationParams(requestId=request_id, reason="test")
                await session.send_notification(
                    ClientNotification(CancelledNotification(params=params))
                )
                seen = await session.call_tool("cancelled")
                # The server sends nothing for the cancelled call: stop waiting for it.
                tg.cancel_scope.cancel()
            alive = await session.send_ping()
    assert json.loads(seen.content[0].text) == [request_id]  # type: ignore[union-attr]
    assert alive is not None


# Our client against the official SDK's server


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SDK's WebSocket server under uvicorn in a subprocess; yields its URL."""
    log = tmp_path_factory.mktemp("sdk") / "server.log"
    script = Path(__file__).with_name("sdk_ws_server.py")
    with log.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=errors, text=True
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.strip().isdigit(), f"no port from the SDK server: {log.read_text()}"
            yield f"ws://127.0.0.1:{int(line)}/"
        finally:
            process.terminate()
            process.wait(timeout=LIMIT)
            process.stdout.close()  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_our_client_initializes_against_the_sdk_server(sdk_server: str) -> None:
    with anyio.fail_after(LIMIT):
        async with WebSocketClient(sdk_server, mcp=True) as client:
            tools = await client.list_tools()
            rtt = await client.ping()
    info = client.server_info
    assert info is not None
    assert client.subprotocol == "mcp"
    assert info.protocol_version == LATEST_PROTOCOL_VERSION
    assert info.name == "sdk-server"
    assert info.instructions == "The official SDK's server."
    assert "tools" in info.capabilities
    by_name = {tool["name"]: tool for tool in tools}
    assert {"add", "where", "fail", "count", "block", "cancelled"} <= set(by_name)
    assert by_name["add"]["inputSchema"]["required"] == ["a", "b"]
    assert rtt >= 0


@pytest.mark.anyio
async def test_our_client_calls_sdk_tools(sdk_server: str) -> None:
    address = {"city": "Zürich", "tags": ["ä", "✓"]}
    with anyio.fail_after(LIMIT):
        async with WebSocketClient(sdk_server, mcp=True) as client:
            added = await client.call_tool("add", {"a": 2, "b": 3})
            where = await client.call_tool("where", {"name": UNICODE, "address": address})
            failed = await client.call_tool("fail")
            bad = await client.call_tool("add", {"a": "x", "b": 3})
            value = await client.invoke_tool("add", {"a": 20, "b": 22})
            with pytest.raises(ToolError, match="nope"):
                await client.invoke_tool("fail")
    assert not added.is_error
    assert added.text == "5"
    assert added.structured_content == {"result": 5}
    assert where.text == f"{UNICODE} lives in Zürich (ä, ✓)"
    assert failed.is_error
    assert "nope" in failed.text
    assert bad.is_error
    # FastMCP wraps non-object results as {"result": ...} structured content.
    assert value == {"result": 42}


@pytest.mark.anyio
async def test_our_client_gets_sdk_progress(sdk_server: str) -> None:
    updates: list[ProgressUpdate] = []
    with anyio.fail_after(LIMIT):
        async with WebSocketClient(sdk_server, mcp=True) as client:
            result = await client.call_tool("count", {"n": 3}, on_progress=updates.append)
    assert result.text == "3"
    assert updates == [ProgressUpdate(step, 3, f"step {step}") for step in (1, 2, 3)]


@pytest.mark.anyio
async def test_our_client_cancels_a_timed_out_call_on_the_sdk_server(sdk_server: str) -> None:
    tag = uuid.uuid4().hex
    with anyio.fail_after(LIMIT):
        async with WebSocketClient(sdk_server, mcp=True) as client:
            with pytest.raises(TimeoutError):
                # The tool never returns: this timeout is the event under test.
                await client.call_tool("block", {"tag": tag}, timeout=0.2)
            seen = await client.call_tool("cancelled")
            assert client.pending_count == 0
    assert tag in seen.structured_content["result"]


# Our client against our server


@pytest.mark.anyio
async def test_our_client_and_server_speak_mcp(our_server: RunningServer) -> None:
    updates: list[ProgressUpdate] = []

    async def on_progress(update: ProgressUpdate) -> None:
        updates.append(update)

    with anyio.fail_after(LIMIT):
        async with WebSocketClient(our_server.url, mcp=True) as client:
            tools = await client.list_tools()
            echoed = await client.call_tool("echo", {"message": UNICODE})
            counted = await client.call_tool("count", {"n": 3}, on_progress=on_progress)
            value = await client.invoke_tool("add", {"a": 1, "b": 2})
            with pytest.raises(InvalidParams, match="Unknown tool: nope"):
                await client.call_tool("nope")
            with pytest.raises(ToolError, match="nope"):
                await client.invoke_tool("fail")
    assert client.welcome is None
    assert [tool["name"] for tool in tools][:2] == ["echo", "describe"]
    assert echoed.value() == {"echoed": UNICODE}
    assert counted.value() == 3
    assert [update.progress for update in updates] == [1, 2, 3]
    assert value == 3


@pytest.mark.anyio
async def test_our_client_cancels_when_its_task_is_cancelled(our_server: RunningServer) -> None:
    started = anyio.Event()
    with anyio.fail_after(LIMIT):
        async with WebSocketClient(our_server.url, mcp=True) as client:
            async with anyio.create_task_group() as tg:

                async def blocked() -> None:
                    await client.call_tool("block", on_progress=lambda _: started.set())

                tg.start_soon(blocked)
                await started.wait()
                tg.cancel_scope.cancel()
            seen = await client.call_tool("cancelled")
    assert len(seen.value()) == 1


# A client of the original system: seed dialect, exactly as it framed requests


@ASYNCIO_ONLY
@pytest.mark.anyio
async def test_an_original_seed_client_keeps_working(our_server: RunningServer) -> None:
    async def ask(ws: Any, method: str, params: dict[str, Any] | None = None) -> Any:
        request_id = str(uuid.uuid4())
        await ws.send(json.dumps({"id": request_id, "method": method, "params": params or {}}))
        answer = json.loads(await ws.recv())
        assert answer["id"] == request_id
        assert "jsonrpc" not in answer
        return answer

    with anyio.fail_after(LIMIT):
        async with websockets.connect(our_server.url) as ws:
            welcome = json.loads(await ws.recv())
            pong = await ask(ws, "ping")
            listed = await ask(ws, "list_tools")
            echoed = await ask(
                ws, "invoke_tool", {"tool_name": "echo", "params": {"message": "hi"}}
            )
            missing = await ask(ws, "invoke_tool", {"tool_name": "nope", "params": {}})
    assert welcome == {
        "id": "welcome",
        "result": {
            "message": "Connected to interop",
            "tools": ["echo", "describe", "add", "fail", "count", "block", "cancelled"],
        },
    }
    assert pong["result"] == {"pong": True}
    assert [tool["name"] for tool in listed["result"]["tools"]][:3] == ["echo", "describe", "add"]
    assert echoed["result"] == {"echoed": "hi"}
    assert missing["error"] == {"code": -32601, "message": "Tool not found: nope"}


@ASYNCIO_ONLY
@pytest.mark.anyio
async def test_an_mcp_client_without_the_subprotocol_is_served_mcp(
    our_server: RunningServer,
) -> None:
    init = {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "raw"}}
    with anyio.fail_after(LIMIT):
        async with websockets.connect(our_server.url) as ws:
            welcome = json.loads(await ws.recv())
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
            )
            initialized = json.loads(await ws.recv())
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            listed = json.loads(await ws.recv())
    assert ws.subprotocol is None
    assert welcome["id"] == "welcome"
    assert initialized["result"]["protocolVersion"] == "2025-03-26"
    assert listed["jsonrpc"] == "2.0"
    assert listed["result"]["tools"][0]["name"] == "echo"
