"""MCP over WebSocket: our client against the official SDK's server and against ours.

- Our client against the SDK's WebSocket server (``mcp.server.websocket`` under
  uvicorn, in a subprocess), on asyncio and trio.
- Our client against our server, both dialects.

Other implementations' clients against our server are in ``test_mcp_interop.py``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from securemcp import InvalidParams, ToolError
from securemcp.backends.mcp_client import ProgressUpdate
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION
from securemcp.transport import WebSocketClient

from .interop_helpers import (
    LIMIT,
    UNICODE,
    RunningServer,
    our_server_fixture,  # noqa: F401 - the our_server fixture: asyncio and trio
)

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
