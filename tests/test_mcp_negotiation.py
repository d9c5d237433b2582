"""Our client negotiating MCP 2026-07-28 with our server, on every backend, and its fallback.

``WebSocketClient(url, mcp=True)`` probes ``server/discover`` first and sends
the ``_meta`` envelope on every request of the stateless revision; against a
server without it, it falls back to ``initialize``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from securemcp import InvalidParams, RequestTimeout, SecureMCP, ToolError
from securemcp.backends.mcp_client import (
    ProgressUpdate,
    check_result_type,
    newest_modern_version,
    parse_discover_result,
    request_meta,
    with_meta,
)
from securemcp.errors import InternalError
from securemcp.protocol import mcp as mcp_module
from securemcp.protocol.mcp import LATEST_PROTOCOL_VERSION, SUPPORTED_VERSIONS, MCPSession
from securemcp.protocol.mcp_stateless import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY,
)
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving
from .interop_helpers import count, echo, fail

LIMIT = 20
MODERN = "2026-07-28"


def negotiation_app(cancelled: anyio.Event | None) -> SecureMCP:
    app = SecureMCP("negotiation", "Tools for negotiation tests.", version="3.1")

    app.tool()(echo)
    app.tool()(fail)
    app.tool()(count)

    @app.tool()
    async def block() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if cancelled is not None:
                cancelled.set()

    return app


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every stateless request the server cores serve: ``(method, its _meta)``."""
    requests: list[tuple[str, Any]] = []
    original = MCPSession._serve_stateless

    def spy(self: MCPSession, request_id: Any, method: str, params: dict[str, Any]) -> Any:
        requests.append((method, params.get("_meta")))
        return original(self, request_id, method, params)

    monkeypatch.setattr(MCPSession, "_serve_stateless", spy)
    return requests


def transport(cancelled: anyio.Event | None = None) -> WebSocketTransport:
    return WebSocketTransport(negotiation_app(cancelled), shutdown_grace=1, close_timeout=2)


@pytest.mark.anyio
async def test_our_client_speaks_2026_07_28_with_our_server(seen: list[tuple[str, Any]]) -> None:
    updates: list[ProgressUpdate] = []
    with anyio.fail_after(LIMIT):
        async with serving(transport()) as port:
            url = f"ws://127.0.0.1:{port}/mcp"
            async with WebSocketClient(url, mcp=True) as client:
                tools = await client.list_tools()
                echoed = await client.call_tool("echo", {"message": "hé"})
                counted = await client.call_tool("count", {"n": 2}, on_progress=updates.append)
                added = await client.invoke_tool("echo", {"message": "x"})
                with pytest.raises(InvalidParams, match="Unknown tool: nope"):
                    await client.call_tool("nope")
                with pytest.raises(ToolError, match="nope"):
                    await client.invoke_tool("fail")
                assert await client.ping() >= 0
    info = client.server_info
    assert info is not None
    assert info.protocol_version == MODERN
    assert (info.name, info.version) == ("negotiation", "3.1")
    assert info.instructions == "Tools for negotiation tests."
    assert info.capabilities == {"tools": {"listChanged": False}}
    assert info.supported_versions == SUPPORTED_VERSIONS
    assert [tool["name"] for tool in tools] == ["echo", "fail", "count", "block"]
    assert echoed.value() == {"echoed": "hé"}
    assert counted.value() == 2
    assert updates == [ProgressUpdate(1, 2, "step 1"), ProgressUpdate(2, 2, "step 2")]
    assert added == {"echoed": "x"}
    # Every request was a stateless one, with its envelope.
    assert [method for method, _ in seen] == [
        "server/discover",
        "tools/list",
        "tools/call",
        "tools/call",
        "tools/call",
        "tools/call",
        "tools/call",
        "server/discover",  # ping(): 2026-07-28 has no ping
    ]
    for _, meta in seen:
        assert meta[PROTOCOL_VERSION_KEY] == MODERN
        assert meta[CLIENT_CAPABILITIES_KEY] == {}
        assert meta[CLIENT_INFO_KEY]["name"] == "securemcp"
    assert "progressToken" in seen[3][1]  # the progress call kept its token


@pytest.mark.anyio
async def test_a_timed_out_stateless_call_is_cancelled_on_the_server() -> None:
    cancelled = anyio.Event()
    with anyio.fail_after(LIMIT):
        async with serving(transport(cancelled)) as port:
            url = f"ws://127.0.0.1:{port}/mcp"
            async with WebSocketClient(url, mcp=True) as client:
                with pytest.raises(RequestTimeout):
                    await client.call_tool("block", timeout=0.3)
                await cancelled.wait()
                assert (await client.call_tool("echo", {"message": "on"})).value() == {
                    "echoed": "on"
                }
                assert client.pending_count == 0
    assert client.server_info is not None
    assert client.server_info.protocol_version == MODERN


@pytest.mark.anyio
async def test_our_client_falls_back_to_initialize_on_a_legacy_server(
    monkeypatch: pytest.MonkeyPatch, seen: list[tuple[str, Any]]
) -> None:
    # Our server as it was before 2026-07-28: no request is ever a stateless one,
    # so server/discover before initialize is "not initialized" (-32600).
    monkeypatch.setattr(mcp_module, "has_envelope", lambda params: False)
    with anyio.fail_after(LIMIT):
        async with serving(transport()) as port:
            url = f"ws://127.0.0.1:{port}/mcp"
            async with WebSocketClient(url, mcp=True) as client:
                tools = await client.list_tools()
                echoed = await client.call_tool("echo", {"message": "x"})
                assert await client.ping() >= 0
    info = client.server_info
    assert info is not None
    assert info.protocol_version == LATEST_PROTOCOL_VERSION
    assert info.supported_versions == ()
    assert info.name == "negotiation"
    assert len(tools) == 4
    assert echoed.value() == {"echoed": "x"}
    assert seen == []


# The plain-data parts


def test_the_envelope_merges_into_params() -> None:
    meta = request_meta(MODERN, "9.9")
    assert meta == {
        PROTOCOL_VERSION_KEY: MODERN,
        CLIENT_CAPABILITIES_KEY: {},
        CLIENT_INFO_KEY: {"name": "securemcp", "version": "9.9"},
    }
    assert with_meta(None, meta) == {"_meta": meta}
    assert with_meta({"name": "t"}, meta) == {"name": "t", "_meta": meta}
    assert with_meta({"_meta": {"progressToken": "p"}}, meta) == {
        "_meta": {"progressToken": "p", **meta}
    }
    assert with_meta({"_meta": "odd"}, meta) == {"_meta": meta}
    assert with_meta([1, 2], meta) == [1, 2]


def test_discover_answers_are_read_leniently_and_others_are_no_discover() -> None:
    info = parse_discover_result(
        {
            "supportedVersions": [MODERN, 7],
            "capabilities": {},
            "_meta": {SERVER_INFO_KEY: {"name": "s", "version": "1"}},
            "instructions": 3,
        },
        MODERN,
    )
    assert info is not None
    assert (info.name, info.version, info.instructions) == ("s", "1", None)
    assert info.supported_versions == (MODERN, "7")
    assert parse_discover_result({"supportedVersions": [], "capabilities": {}}, MODERN) is not None
    others: list[Any] = [[], {}, {"tools": []}, {"supportedVersions": "x", "capabilities": {}}]
    for other in others:
        assert parse_discover_result(other, MODERN) is None


def test_the_newest_mutual_stateless_version() -> None:
    assert newest_modern_version([MODERN, "2025-11-25"]) == MODERN
    assert newest_modern_version(["2025-11-25"]) is None
    assert newest_modern_version("2026-07-28") is None


def test_only_complete_results_are_read() -> None:
    check_result_type({"resultType": "complete"})
    check_result_type({})  # an earlier-revision server
    check_result_type([1])
    with pytest.raises(InternalError, match="input_required"):
        check_result_type({"resultType": "input_required", "requestState": "x"})
