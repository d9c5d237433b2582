"""The chat example, one server process, reached by both official MCP SDKs at once.

The SDK 2.x client (Streamable HTTP, run from ``.venv-mcp2``: it has no
WebSocket transport) and the SDK 1.x client (WebSocket, the project's own
environment) list and call the chat's tools on the same server, on asyncio and
on trio; what one sends, the other reads back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.websocket import websocket_client

from .test_chat_example import BACKENDS, start_chat_server

SDK2_SCRIPT = """
import anyio, json, sys
from mcp import Client

async def main():
    out = {}
    with anyio.fail_after(20):
        async with Client(sys.argv[1], mode=sys.argv[2]) as client:
            out["protocol_version"] = client.protocol_version
            out["tools"] = sorted(tool.name for tool in (await client.list_tools()).tools)
            sent = await client.call_tool(
                "send_message", {"username": "sdk2", "message": "over HTTP", "room": "mcp"}
            )
            out["sent"] = sent.structured_content
            echoed = await client.call_tool("echo", {"message": "hi"})
            out["echo_error"] = bool(echoed.is_error)
    print(json.dumps(out))

anyio.run(main)
"""


def sdk2(python: Path, url: str, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), "-c", SDK2_SCRIPT, url, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


SDK1_WEBSOCKET_DEPRECATED = "ignore:The WebSocket client transport is deprecated:DeprecationWarning"
"""The 1.x SDK warns that its WebSocket client will go in 2.0: it is the client under test."""


@pytest.mark.filterwarnings(SDK1_WEBSOCKET_DEPRECATED)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sdk2_over_http_and_sdk1_over_websocket_share_one_chat_server(
    mcp2_python: Path, backend: str, tmp_path: Path
) -> None:
    with start_chat_server(backend, "--db", str(tmp_path / "chat.db")) as server:
        http_url = f"http://127.0.0.1:{server.port}/mcp"
        modern = sdk2(mcp2_python, http_url, "auto")
        legacy = sdk2(mcp2_python, http_url, "legacy")
        assert modern["protocol_version"] == "2026-07-28"
        assert legacy["protocol_version"] != "2026-07-28"
        for seen in (modern, legacy):
            assert {"send_message", "get_messages", "join_room", "echo"} <= set(seen["tools"])
            assert "clear_history" not in seen["tools"]  # needs the admin scope
            assert seen["sent"]["status"] == "sent"
            assert seen["echo_error"] is False

        async def over_websocket() -> dict[str, Any]:
            async with (
                websocket_client(server.url) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                tools = {tool.name for tool in (await session.list_tools()).tools}
                assert "get_messages" in tools
                result = await session.call_tool("get_messages", {"room": "mcp", "limit": 10})
                assert not result.isError
                assert result.structuredContent is not None
                return dict(result.structuredContent)

        history = anyio.run(over_websocket)  # the 1.x WebSocket client runs on asyncio only
        assert [m["message"] for m in history["messages"]] == ["over HTTP", "over HTTP"]
        assert [m["username"] for m in history["messages"]] == ["sdk2", "sdk2"]
