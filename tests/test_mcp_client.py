"""Our client's MCP dialect against a scripted server that answers what each test says.

The scripted server is a ``websockets`` asyncio server, so these tests run on
asyncio; the client's MCP code is the same on trio (see test_mcp_interop_client.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from securemcp import InternalError, LocalProtocolError, ToolError
from securemcp.backends.mcp_client import (
    ProgressUpdate,
    ToolResult,
    parse_initialize_result,
    parse_tool_result,
)
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION, UnsupportedProtocolVersion
from securemcp.transport import WebSocketClient


@pytest.fixture
def anyio_backend() -> str:
    """The scripted server is websockets' asyncio server."""
    return "asyncio"


LIMIT = 10

Script = Callable[[str, dict[str, Any]], Any]
"""``answer(method, params)``: the result, or :class:`Messages` to send instead."""

GOOD_INIT = {
    "protocolVersion": LATEST_PROTOCOL_VERSION,
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "scripted", "version": "9"},
}


class Messages(list[Any]):
    """Several raw messages to send instead of one answer."""


class Fail(dict[str, Any]):
    """An error object to answer with instead of a result."""


@asynccontextmanager
async def scripted(answer: Script, *, subprotocols: list[str] | None = None) -> AsyncIterator[str]:
    """Serve ``answer`` on a free port; yield the URL. Records nothing, answers everything."""

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if "id" not in message:
                continue
            method = message["method"]
            result = answer(method, message.get("params") or {})
            if isinstance(result, Messages):
                for item in result:
                    await ws.send(json.dumps(item))
            elif isinstance(result, Fail):
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": result}))
            else:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}))

    offered = [Subprotocol(name) for name in subprotocols or ["mcp"]]
    async with serve(handler, "127.0.0.1", 0, subprotocols=offered) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


def initialize_then(rest: Script, init: Any = GOOD_INIT) -> Script:
    """A legacy (2025) server: it does not know the 2026-07-28 probe, ``server/discover``."""

    def answer(method: str, params: dict[str, Any]) -> Any:
        if method == "server/discover":
            return Fail(code=-32601, message="Method not found")
        return init if method == "initialize" else rest(method, params)

    return answer


@pytest.mark.anyio
async def test_a_server_choosing_an_unknown_revision_is_refused() -> None:
    init = {**GOOD_INIT, "protocolVersion": "1999-01-01"}
    with anyio.fail_after(LIMIT):
        async with scripted(initialize_then(lambda m, p: {}, init)) as url:
            client = WebSocketClient(url, mcp=True)
            with pytest.raises(UnsupportedProtocolVersion) as refused:
                await client.connect()
    assert refused.value.version == "1999-01-01"
    assert client.closed


def test_initialize_answers_are_checked() -> None:
    with pytest.raises(InternalError):
        parse_initialize_result(["not", "an", "object"])
    info = parse_initialize_result({"protocolVersion": "2024-11-05", "serverInfo": "odd"})
    assert (info.name, info.version, info.capabilities, info.instructions) == ("", "", {}, None)


@pytest.mark.anyio
async def test_list_tools_follows_cursors_and_stops_on_a_loop() -> None:
    pages = {None: ("a", "c1"), "c1": ("b", "c2"), "c2": ("c", None)}

    def paged(method: str, params: dict[str, Any]) -> Any:
        name, cursor = pages[params.get("cursor")]
        result: dict[str, Any] = {"tools": [{"name": name, "inputSchema": {"type": "object"}}]}
        if cursor is not None:
            result["nextCursor"] = cursor
        return result

    def looping(method: str, params: dict[str, Any]) -> Any:
        return {"tools": [], "nextCursor": "again"}

    with anyio.fail_after(LIMIT):
        async with (
            scripted(initialize_then(paged)) as url,
            WebSocketClient(url, mcp=True) as client,
        ):
            tools = await client.list_tools()
        async with (
            scripted(initialize_then(looping)) as url,
            WebSocketClient(url, mcp=True) as client,
        ):
            with pytest.raises(InternalError, match="cursor repeats"):
                await client.list_tools()
        async with (
            scripted(initialize_then(lambda m, p: {"tools": "none"})) as url,
            WebSocketClient(url, mcp=True) as client,
        ):
            with pytest.raises(InternalError, match="no 'tools' list"):
                await client.list_tools()
    assert [tool["name"] for tool in tools] == ["a", "b", "c"]


def test_tool_results_are_read_leniently_but_need_content() -> None:
    with pytest.raises(InternalError):
        parse_tool_result({"isError": False})
    result = parse_tool_result(
        {"content": [{"type": "text", "text": "not json"}, "junk", {"type": "image"}]}
    )
    assert result == ToolResult([{"type": "text", "text": "not json"}, {"type": "image"}])
    assert result.value() == "not json"
    assert ToolResult([{"type": "text", "text": "[1, 2]"}]).value() == [1, 2]
    with pytest.raises(ToolError, match="Tool execution error"):
        ToolResult([], is_error=True).value()


@pytest.mark.anyio
async def test_progress_for_nobody_goes_to_the_notification_stream() -> None:
    def noisy(method: str, params: dict[str, Any]) -> Any:
        token = params["_meta"]["progressToken"]
        return Messages(
            [
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": "junk"},
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": "other", "progress": 1},
                },
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": True},
                },
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": 2, "total": "x"},
                },
                {
                    "jsonrpc": "2.0",
                    "id": 3,  # after server/discover and initialize
                    "result": {"content": [{"type": "text", "text": "done"}]},
                },
            ]
        )

    updates: list[ProgressUpdate] = []
    with anyio.fail_after(LIMIT):
        async with (
            scripted(initialize_then(noisy)) as url,
            WebSocketClient(url, mcp=True) as client,
        ):
            result = await client.call_tool("t", {}, on_progress=updates.append)
            notes = client.notifications()
            stray = [await notes.__anext__() for _ in range(3)]
    assert result.text == "done"
    assert updates == [ProgressUpdate(2, None, None)]
    assert [note.params for note in stray] == [
        "junk",
        {"progressToken": "other", "progress": 1},
        {"progressToken": "progress-1", "progress": True},
    ]


@pytest.mark.anyio
async def test_call_tool_needs_an_mcp_connection() -> None:
    with anyio.fail_after(LIMIT):
        async with (
            scripted(lambda m, p: {}, subprotocols=["other"]) as url,
            WebSocketClient(url, subprotocols=["other"]) as client,
        ):
            assert not client.speaks_mcp
            with pytest.raises(LocalProtocolError, match="mcp=True"):
                await client.call_tool("t")


@pytest.mark.anyio
async def test_the_mcp_subprotocol_chosen_by_the_server_means_mcp() -> None:
    with anyio.fail_after(LIMIT):
        async with (
            scripted(initialize_then(lambda m, p: {})) as url,
            WebSocketClient(url, subprotocols=["mcp"]) as client,
        ):
            assert client.speaks_mcp
            assert client.server_info is not None
            assert client.server_info.name == "scripted"


# Negotiating 2026-07-28 (server/discover first)

MODERN = "2026-07-28"


def discover_result(supported: list[str]) -> dict[str, Any]:
    return {
        "supportedVersions": supported,
        "capabilities": {"tools": {}},
        "ttlMs": 0,
        "cacheScope": "private",
        "resultType": "complete",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern", "version": "2"}},
    }


def modern_server(record: list[tuple[str, dict[str, Any]]], rest: Script) -> Script:
    """A 2026-07-28-only server that records every request's params."""

    def answer(method: str, params: dict[str, Any]) -> Any:
        record.append((method, params))
        meta = params.get("_meta", {})
        version = meta.get("io.modelcontextprotocol/protocolVersion")
        if version != MODERN:
            return Fail(
                code=-32022,
                message="Unsupported protocol version",
                data={"supported": [MODERN], "requested": version},
            )
        if method == "server/discover":
            return discover_result([MODERN])
        return rest(method, params)

    return answer


@pytest.mark.anyio
async def test_a_newer_client_retries_discover_with_the_servers_revision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if we spoke a revision newer than the server: -32022 names the one to use.
    import securemcp.backends._client_session as client_session
    import securemcp.backends.mcp_client as mcp_client

    newer = (MODERN, "2027-01-01")
    monkeypatch.setattr(client_session, "MODERN_PROTOCOL_VERSIONS", newer)
    monkeypatch.setattr(mcp_client, "MODERN_PROTOCOL_VERSIONS", newer)
    record: list[tuple[str, dict[str, Any]]] = []
    tools = {"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "public"}
    with anyio.fail_after(LIMIT):
        async with (
            scripted(modern_server(record, lambda m, p: tools)) as url,
            WebSocketClient(url, mcp=True) as client,
        ):
            assert await client.list_tools() == []
    assert [method for method, _ in record] == ["server/discover", "server/discover", "tools/list"]
    versions = [params["_meta"]["io.modelcontextprotocol/protocolVersion"] for _, params in record]
    assert versions == ["2027-01-01", MODERN, MODERN]
    assert client.server_info is not None
    assert client.server_info.protocol_version == MODERN
    assert client.server_info.name == "modern"


@pytest.mark.anyio
async def test_every_request_carries_the_envelope_and_progress_tokens_survive() -> None:
    record: list[tuple[str, dict[str, Any]]] = []

    def rest(method: str, params: dict[str, Any]) -> Any:
        return {"content": [{"type": "text", "text": "1"}], "resultType": "complete"}

    with anyio.fail_after(LIMIT):
        async with (
            scripted(modern_server(record, rest)) as url,
            WebSocketClient(url, mcp=True) as client,
        ):
            assert await client.invoke_tool("t") == 1
            assert (await client.call_tool("t", {}, on_progress=lambda u: None)).value() == 1
            assert await client.request("custom/method", {"x": 1}) == rest("", {})
    assert [method for method, _ in record] == [
        "server/discover",
        "tools/call",
        "tools/call",
        "custom/method",
    ]
    for _, params in record:
        assert params["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN
    assert record[2][1]["_meta"]["progressToken"] == "progress-1"
    assert record[3][1]["x"] == 1


@pytest.mark.anyio
async def test_a_result_asking_for_input_is_not_read() -> None:
    record: list[tuple[str, dict[str, Any]]] = []

    def rest(method: str, params: dict[str, Any]) -> Any:
        return {"resultType": "input_required", "requestState": "opaque"}

    with anyio.fail_after(LIMIT):
        async with (
            scripted(modern_server(record, rest)) as url,
            WebSocketClient(url, mcp=True) as client,
        ):
            with pytest.raises(InternalError, match="input_required"):
                await client.call_tool("t")


@pytest.mark.parametrize(
    "probe_answer",
    [
        Fail(code=-32022, message="Unsupported", data={"supported": ["2025-11-25"]}),
        Fail(code=-32022, message="Unsupported", data="odd"),
        Fail(code=-32602, message="Invalid request parameters"),  # what SDK 1.x answers
        {"tools": []},  # a server answering anything: no discover result
        Messages([]),  # no answer at all: the probe times out
    ],
)
@pytest.mark.anyio
async def test_anything_but_a_discover_result_falls_back_to_initialize(probe_answer: Any) -> None:
    def answer(method: str, params: dict[str, Any]) -> Any:
        if method == "server/discover":
            return probe_answer
        if method == "initialize":
            assert "_meta" not in params
            return GOOD_INIT
        assert "_meta" not in params  # legacy requests carry no envelope
        return {"tools": []}

    with anyio.fail_after(LIMIT):
        async with (
            scripted(answer) as url,
            WebSocketClient(url, mcp=True, connect_timeout=1) as client,
        ):
            assert await client.list_tools() == []
    assert client.server_info is not None
    assert client.server_info.protocol_version == LATEST_PROTOCOL_VERSION
