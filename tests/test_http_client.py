"""Our Streamable HTTP client (:class:`securemcp.transport.HTTPClient`) against the SDK 2.x.

The server is ``tests/sdk2_http_server.py``, run by the SDK 2.x environment's
interpreter (``tests/mcp2_env.py``): it speaks 2026-07-28 (``server/discover``)
and, through ``initialize``, 2025-11-25 with a session and SSE answers. Every
test runs on asyncio, trio and asyncio's anyio path, each network wait bounded.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from securemcp.backends._client_target import parse_http_url
from securemcp.backends._http_transport import SSEParser
from securemcp.backends.http_client import MODERN_PROTOCOL_VERSION
from securemcp.backends.mcp_client import ProgressUpdate
from securemcp.errors import (
    InternalError,
    LocalProtocolError,
    RequestTimeout,
    RPCError,
    ToolError,
)
from securemcp.transport import HTTPClient, HTTPRejected

from .mcp2_env import TOKEN

LIMIT = 20
"""Seconds any one test may take on the network before it is a failure."""

UNICODE = "héllo wörld ✓ 🌍 \u202e مرحبا"
MODES = pytest.mark.parametrize("protocol", ["auto", "legacy"])


@pytest.mark.anyio
@MODES
async def test_lists_the_sdk_servers_tools(sdk2_http_server: str, protocol: Any) -> None:
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol=protocol) as client:
            tools = await client.list_tools()
            rtt = await client.ping()
    by_name = {tool["name"]: tool for tool in tools}
    assert {"echo", "add", "count", "fail"} <= set(by_name)
    assert by_name["add"]["inputSchema"]["required"] == ["a", "b"]
    assert rtt >= 0
    info = client.server_info
    assert info is not None
    assert info.name == "sdk2-test-server"
    assert "tools" in info.capabilities
    if protocol == "auto":
        # The SDK 2.x server answers server/discover: no handshake, no session.
        assert client.stateless
        assert client.protocol_version == MODERN_PROTOCOL_VERSION
        assert client.session_id is None
    else:
        assert not client.stateless
        assert client.protocol_version == "2025-11-25"
        assert client.session_id
    assert client.closed


@pytest.mark.anyio
@MODES
async def test_calls_the_sdk_servers_tools(sdk2_http_server: str, protocol: Any) -> None:
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol=protocol) as client:
            echoed = await client.call_tool("echo", {"message": UNICODE})
            added = await client.call_tool("add", {"a": 2, "b": 3})
            value = await client.invoke_tool("add", {"a": 20, "b": 22})
            bad = await client.call_tool("add", {"a": "x", "b": 3})
            unknown = await client.call_tool("nope", {})
            failed = await client.call_tool("fail", {"reason": "kaputt"})
            with pytest.raises(ToolError, match="validation error"):
                await client.invoke_tool("add", {"a": "x", "b": 3})
            with pytest.raises(ToolError, match="Unknown tool: nope"):
                await client.invoke_tool("nope")
            with pytest.raises(ToolError, match="Error executing tool fail"):
                await client.invoke_tool("fail")
    assert echoed.text == UNICODE
    assert not added.is_error
    assert added.text == "5"
    assert added.structured_content == {"result": 5}
    # The SDK wraps non-object results as {"result": ...} structured content.
    assert value == {"result": 42}
    # SDK 2.x answers bad arguments and unknown tools with a failed result, not
    # a JSON-RPC error: the text says which.
    assert bad.is_error
    assert "Input should be a valid integer" in bad.text
    assert unknown.is_error
    assert unknown.text == "Unknown tool: nope"
    # An unexpected exception's message stays on the server.
    assert failed.is_error
    assert "kaputt" not in failed.text


@pytest.mark.anyio
async def test_x_mcp_header_arguments_are_mirrored_once_the_tools_are_listed(
    sdk2_http_server: str,
) -> None:
    """2026-07-28 (SEP-2243): a listed tool's ``x-mcp-header`` argument goes as ``Mcp-Param-*``."""
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol="modern") as client:
            # Not listed yet, so the client cannot know of the header; the SDK refuses.
            with pytest.raises(RPCError) as unlisted:
                await client.call_tool("forecast", {"region": UNICODE})
            tools = await client.list_tools()
            result = await client.call_tool("forecast", {"region": UNICODE, "days": 2})
            plain = await client.call_tool("forecast", {"region": "eu-west"})
    assert unlisted.value.code == -32020
    assert "Mcp-Param-Region" in unlisted.value.message
    forecast = next(tool for tool in tools if tool["name"] == "forecast")
    assert forecast["inputSchema"]["properties"]["region"]["x-mcp-header"] == "Region"
    assert (result.is_error, result.text) == (False, f"{UNICODE}: 2 day(s) of sun")
    assert plain.text == "eu-west: 1 day(s) of sun"


@pytest.mark.anyio
@MODES
async def test_progress_reaches_the_callback(sdk2_http_server: str, protocol: Any) -> None:
    seen: list[ProgressUpdate] = []
    awaited: list[ProgressUpdate] = []

    async def on_progress(update: ProgressUpdate) -> None:
        await anyio.lowlevel.checkpoint()
        awaited.append(update)

    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol=protocol) as client:
            counted = await client.call_tool("count", {"steps": 3}, on_progress=seen.append)
            again = await client.call_tool("count", {"steps": 2}, on_progress=on_progress)
            quiet = await client.call_tool("count", {"steps": 2})
    assert counted.text == "counted 3"
    assert seen == [ProgressUpdate(step, 3, f"step {step}") for step in (1, 2, 3)]
    assert again.text == "counted 2"
    assert awaited == [ProgressUpdate(step, 2, f"step {step}") for step in (1, 2)]
    assert quiet.text == "counted 2"


@pytest.mark.anyio
@MODES
async def test_concurrent_calls_each_get_their_answer(sdk2_http_server: str, protocol: Any) -> None:
    results: dict[int, Any] = {}

    async def add(n: int, client: HTTPClient) -> None:
        results[n] = await client.invoke_tool("add", {"a": n, "b": 1000})

    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol=protocol) as client:
            async with anyio.create_task_group() as tg:
                for n in range(8):
                    tg.start_soon(add, n, client)
            # The keep-alive connections are reused afterwards.
            assert await client.invoke_tool("add", {"a": 1, "b": 1}) == {"result": 2}
    assert results == {n: {"result": n + 1000} for n in range(8)}


@pytest.mark.anyio
@MODES
async def test_a_slow_call_times_out_and_the_client_goes_on(
    sdk2_http_server: str, protocol: Any
) -> None:
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol=protocol, timeout=5) as client:
            with pytest.raises(RequestTimeout, match="tools/call"):
                # 200 steps of 10 ms: this timeout is the event under test.
                await client.call_tool("count", {"steps": 200}, timeout=0.2)
            assert await client.invoke_tool("add", {"a": 1, "b": 2}) == {"result": 3}


@pytest.mark.anyio
async def test_a_cancelled_call_leaves_the_client_usable(sdk2_http_server: str) -> None:
    started = anyio.Event()
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol="legacy") as client:
            async with anyio.create_task_group() as tg:

                async def slow() -> None:
                    await client.call_tool(
                        "count", {"steps": 500}, on_progress=lambda _: started.set()
                    )

                tg.start_soon(slow)
                await started.wait()
                tg.cancel_scope.cancel()
            assert await client.invoke_tool("echo", {"message": "still here"}) == {
                "result": "still here"
            }


@pytest.mark.anyio
async def test_closing_deletes_the_session_and_a_lost_session_is_renewed(
    sdk2_http_server: str,
) -> None:
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server, protocol="legacy") as first:
            deleted = first.session_id
        async with HTTPClient(sdk2_http_server, protocol="legacy") as second:
            assert second.session_id not in (None, deleted)
            # As if the server had forgotten the session: it answers 404, and the
            # client starts a new session and sends the call again.
            second.session_id = deleted
            tools = await second.list_tools()
            renewed = second.session_id
    assert deleted
    assert renewed not in (None, deleted)
    assert "echo" in {tool["name"] for tool in tools}


@pytest.mark.anyio
@MODES
async def test_plain_json_answers(sdk2_http_server_json: str, protocol: Any) -> None:
    seen: list[ProgressUpdate] = []
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server_json, protocol=protocol) as client:
            assert await client.invoke_tool("add", {"a": 2, "b": 2}) == {"result": 4}
            counted = await client.call_tool("count", {"steps": 2}, on_progress=seen.append)
            tools = await client.list_tools()
    # JSON answers have no room for progress: the result alone comes back.
    assert counted.text == "counted 2"
    assert seen == []
    assert "echo" in {tool["name"] for tool in tools}
    assert client.session_id is None


@pytest.mark.anyio
@MODES
async def test_bearer_token_accepted(sdk2_http_server_auth: str, protocol: Any) -> None:
    with anyio.fail_after(LIMIT):
        async with HTTPClient(sdk2_http_server_auth, token=TOKEN, protocol=protocol) as client:
            assert await client.invoke_tool("add", {"a": 1, "b": 1}) == {"result": 2}


@pytest.mark.anyio
@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_or_wrong_token_refused(sdk2_http_server_auth: str, token: Any) -> None:
    with anyio.fail_after(LIMIT):
        client = HTTPClient(sdk2_http_server_auth, token=token)
        with pytest.raises(HTTPRejected) as rejected:
            await client.connect()
    assert rejected.value.status_code == 401
    assert str(rejected.value) == "HTTP request rejected with HTTP 401"
    challenge = rejected.value.header("www-authenticate")
    assert challenge is not None
    assert challenge.lower().startswith("bearer")
    assert client.closed


@pytest.mark.anyio
async def test_modern_only_and_misuse(sdk2_http_server: str) -> None:
    client = HTTPClient(sdk2_http_server, protocol="modern")
    with pytest.raises(LocalProtocolError, match="not connected"):
        await client.list_tools()
    with anyio.fail_after(LIMIT):
        async with client:
            assert client.stateless
            with pytest.raises(LocalProtocolError, match="already"):
                await client.connect()
    with pytest.raises(LocalProtocolError, match="closed"):
        await client.list_tools()
    await client.aclose()


@pytest.mark.anyio
async def test_connection_refused() -> None:
    from .redis_server import free_port

    with anyio.fail_after(LIMIT), pytest.raises(ConnectionRefusedError):
        async with HTTPClient(f"http://127.0.0.1:{free_port()}/mcp"):
            pass


# Pure parts


def test_url_checks() -> None:
    target = parse_http_url("https://example.com/mcp?x=1")
    assert (target.secure, target.port, target.resource) == (True, 443, "/mcp?x=1")
    assert parse_http_url("http://[::1]:8000").host_header == "[::1]:8000"
    with pytest.raises(ValueError, match="http://"):
        parse_http_url("ws://example.com/mcp")
    with pytest.raises(ValueError, match="credentials"):
        HTTPClient("http://user:pw@example.com/mcp")
    with pytest.raises(ValueError, match="protocol"):
        HTTPClient("http://example.com/mcp", protocol="new")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bearer token"):
        HTTPClient("http://example.com/mcp", token="not a token")
    assert "unconnected" not in repr(HTTPClient("http://example.com/mcp"))


def test_sse_parser() -> None:
    parser = SSEParser(1000)
    assert parser.feed(b': comment\r\nevent: message\r\ndata: {"a":') == []
    assert parser.feed(b"1}\r") == []
    assert parser.feed(b"\n\r\n") == ['{"a":1}']
    # A CR that ends the chunk may be half of a CRLF: its line waits for the next byte.
    assert parser.feed(b"id: 7\ndata:x\ndata: y\n\ndata: z\r\r") == ["x\ny"]
    assert parser.feed(b"\n") == ["z"]
    assert parser.feed(b"retry: 10\n\n") == []
    with pytest.raises(InternalError, match="exceeds"):
        parser.feed(b"data: " + b"x" * 1000)
