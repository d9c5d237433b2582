"""MCP over WebSocket: other implementations' clients against our server, over loopback sockets.

- The official MCP Python SDK's WebSocket client (``mcp.client.websocket``)
  against our server, run on asyncio and on trio (in a thread with its own
  loop). That client is built on the ``websockets`` asyncio API, so it runs on
  asyncio only: those tests pin ``anyio_backend`` to asyncio.
- A client of the original SecureMCP WebSocket transport (seed dialect, raw
  frames as it sent them) against our server.

Our client, against the SDK's server and against ours, is in
``test_mcp_interop_client.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest
import websockets
from mcp import ClientSession
from mcp.client.websocket import websocket_client
from mcp.shared.exceptions import McpError
from mcp.types import CancelledNotification, CancelledNotificationParams, ClientNotification

from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION

from .interop_helpers import (
    LIMIT,
    UNICODE,
    RunningServer,
    our_server_fixture,  # noqa: F401 - the our_server fixture: asyncio and trio
)

SDK_CLIENT = pytest.mark.filterwarnings(
    "ignore:The WebSocket client transport is deprecated:DeprecationWarning"
)
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""The SDK's WebSocket client needs asyncio (websockets.asyncio); it cannot run on trio."""


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
