"""MCP Streamable HTTP served by ``WebSocketTransport``: the protocol's answers, hostile inputs.

Raw bytes from a client that is minimal or hostile: status codes, keep-alive
and pipelining, timeouts, the 2026-07-28 routing headers. Every async test runs
on asyncio, trio and asyncio's anyio path, each network wait bounded. Clients,
security and failures: ``test_http_server.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio
import pytest

from securemcp.protocol import Limits
from securemcp.transport import WebSocketTransport

from .helpers import serving
from .http_helpers import LIMIT, MODERN, make_app, one, post, raw, rpc, transport

# Protocol answers


@pytest.mark.anyio
async def test_notifications_get_202_get_405_and_other_paths_keep_their_answers() -> None:
    def page(request: Any) -> tuple[int, list[tuple[str, str]], bytes] | None:
        return (200, [], b"hello page") if request.path == "/" else None

    async with serving(transport(http_handler=page)) as port:
        with anyio.fail_after(LIMIT):
            note = await one(port, post(rpc("notifications/initialized", None)))
            assert (note.status, note.body) == (202, b"")
            get = await one(port, b"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n")
            assert get.status == 405
            assert get.headers["allow"] == "POST"
            home = await one(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (home.status, home.body) == (200, b"hello page")
            missing = await one(port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            assert missing.status == 404
            other = await one(port, post(rpc("tools/list"), path="/other"))
            assert other.status == 405
            # The absolute form of the target (RFC 9112 3.2.2) names the endpoint too.
            for target in ("http://127.0.0.1/mcp", "HTTPS://example.org:8443/mcp?x=1"):
                absolute = await one(port, post(rpc("tools/list", _meta=MODERN), path=target))
                assert absolute.status == 200, target
                assert absolute.json()["result"]["tools"], target
            legacy = await one(
                port, post(rpc("tools/list"), "MCP-Protocol-Version: 1999-01-01\r\n")
            )
            assert legacy.status == 400
            ping = await one(port, post(rpc("ping"), "MCP-Protocol-Version: 2025-11-25\r\n"))
            assert ping.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


@pytest.mark.anyio
async def test_mcp_path_none_turns_it_off() -> None:
    async with serving(transport(mcp_path=None)) as port:
        with anyio.fail_after(LIMIT):
            answer = await one(port, post(rpc("tools/list")))
    assert answer.status == 400  # not an upgrade, as before HTTP serving
    with pytest.raises(ValueError, match="mcp_path"):
        WebSocketTransport(make_app(), mcp_path="mcp")


@pytest.mark.anyio
async def test_a_client_closing_the_answer_cancels_the_call() -> None:
    started, cancelled = anyio.Event(), anyio.Event()
    async with serving(transport(make_app((started, cancelled)))) as port:
        with anyio.fail_after(LIMIT):
            async with raw(port) as client:
                await client.stream.send(post(rpc("tools/call", name="hang", _meta=MODERN)))
                await started.wait()
            await cancelled.wait()


# Hostile inputs


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (post(b'{"jsonrpc": "2.0", "id": 1, "method"'), 400),
        (post(b"[]"), 400),
        (post(b"x" * 5000), 413),
        (b"POST /mcp HTTP/1.1\r\nHost x\r\n\r\n", 400),
        (b"POST /mcp HTTP/1.1\r\n" + b"a: b\r\n" * 200 + b"\r\n", 431),
    ],
)
async def test_hostile_requests_get_defined_answers(data: bytes, status: int) -> None:
    async with serving(transport(limits=Limits(max_http_body=4096))) as port:
        with anyio.fail_after(LIMIT):
            answer = await one(port, data)
    assert answer.status == status
    if status == 400 and data.endswith(b'"method"'):
        assert answer.json()["error"]["code"] == -32700


@pytest.mark.anyio
@pytest.mark.parametrize("partial", [b"", b"POST /mcp HTTP/1.1\r\nHost: x\r\n"])
async def test_slow_or_idle_connections_are_closed_by_the_timeout(partial: bytes) -> None:
    async with serving(transport(handshake_timeout=0.3)) as port:
        with anyio.fail_after(LIMIT):
            async with raw(port) as client:
                await client.stream.send(post(rpc("tools/list", _meta=MODERN)))
                assert (await client.answer()).status == 200
                await client.stream.send(partial)
                start = anyio.current_time()
                assert await client.until_closed() == b""
                assert anyio.current_time() - start >= 0.2


@pytest.mark.anyio
async def test_many_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    async with serving(transport()) as port:
        with anyio.fail_after(LIMIT):
            async with raw(port) as client:
                for n in range(50):
                    args = {"a": n, "b": 1}
                    await client.stream.send(
                        post(rpc("tools/call", n, name="add", arguments=args, _meta=MODERN))
                    )
                    assert (await client.answer()).json()["id"] == n
                pipelined = b"".join(
                    post(rpc("tools/call", n, name=name, arguments=args, _meta=MODERN))
                    for n, (name, args) in enumerate(
                        [("add", {"a": 1, "b": 2}), ("echo", {"message": "m"})] * 10
                    )
                )
                await client.stream.send(pipelined)
                answers = [(await client.answer()).json() for _ in range(20)]
    assert [a["id"] for a in answers] == list(range(20))
    assert [a["result"]["content"][0]["text"] for a in answers[:2]] == ["3", "m"]


@pytest.mark.anyio
async def test_the_websocket_still_upgrades_on_the_same_port() -> None:
    from securemcp.transport import WebSocketClient

    async with serving(transport()) as port, WebSocketClient(f"ws://127.0.0.1:{port}") as ws:
        with anyio.fail_after(LIMIT):
            assert await ws.invoke_tool("add", {"a": 1, "b": 2}) == 3


@pytest.mark.anyio
async def test_routing_headers_must_match_the_body() -> None:
    call = rpc("tools/call", name="echo", arguments={"message": "x"}, _meta=MODERN)
    version = str(MODERN["io.modelcontextprotocol/protocolVersion"])
    base = f"MCP-Protocol-Version: {version}\r\nMcp-Method: tools/call\r\n"
    wrapped = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
    async with serving(transport()) as port:
        with anyio.fail_after(LIMIT):
            for headers in (
                "",  # nothing mirrored
                base,  # no Mcp-Name on a tools/call
                base + "Mcp-Name: add\r\n",  # another tool than the body's
                base.replace("tools/call", "tools/list") + "Mcp-Name: echo\r\n",
                base.replace(version, "2025-11-25") + "Mcp-Name: echo\r\n",
                base + "Mcp-Name: =?base64?!!?=\r\n",  # not base64
            ):
                refused = await one(port, post(call, headers, route=False))
                assert refused.status == 400, headers
                assert refused.json()["error"]["code"] == -32020, headers
                assert refused.json()["id"] == 1
            for headers in (base + "Mcp-Name: echo\r\n", base + f"Mcp-Name: {wrapped}\r\n"):
                answer = await one(port, post(call, headers, route=False))
                assert answer.status == 200, headers
                assert answer.json()["result"]["content"][0]["text"] == "x"
            # The header names the stateless revision, the body carries no envelope.
            bare = rpc("tools/call", name="echo", arguments={"message": "x"})
            unwrapped = await one(port, post(bare, base + "Mcp-Name: echo\r\n", route=False))
            assert unwrapped.status == 400
            assert unwrapped.json()["error"]["code"] == -32020
            assert "MCP-Protocol-Version" in unwrapped.json()["error"]["message"]
            # Legacy requests carry no envelope, and no routing headers are asked of them.
            legacy = await one(
                port, post(rpc("tools/list"), "MCP-Protocol-Version: 2025-11-25\r\n")
            )
            assert legacy.status == 200


@pytest.mark.anyio
async def test_mcp_param_headers_must_match_the_arguments_they_mirror() -> None:
    """A tool's ``x-mcp-header`` argument (``forecast``'s ``region``) and its header agree."""
    zurich = "=?base64?" + base64.b64encode("Zürich".encode()).decode() + "?="

    def call(region: str | None, headers: str) -> bytes:
        arguments = {} if region is None else {"region": region}
        body = rpc("tools/call", name="forecast", arguments=arguments, _meta=MODERN)
        return post(body, headers)

    async with serving(transport()) as port:
        with anyio.fail_after(LIMIT):
            for request, reason in (
                (call("eu", ""), "Mcp-Param-Region is missing"),
                (call("eu", "Mcp-Param-Region: us\r\n"), "does not match"),
                (call("eu", "Mcp-Param-Region: eu\r\nmcp-param-region: eu\r\n"), "more than"),
                (call(None, "Mcp-Param-Region: eu\r\n"), "sent without the argument"),
                (call("Zürich", "Mcp-Param-Region: Zürich\r\n"), "does not match"),
            ):
                refused = await one(port, request)
                assert refused.status == 400, reason
                assert refused.json()["error"]["code"] == -32020
                assert reason in refused.json()["error"]["message"]
            for request in (
                call("eu", "Mcp-Param-Region: eu\r\n"),
                call("eu", "MCP-PARAM-REGION: eu\r\n"),  # header names ignore case
                call("Zürich", f"Mcp-Param-Region: {zurich}\r\n"),
            ):
                answer = await one(port, request)
                assert answer.status == 200
                assert answer.json()["result"]["content"][0]["text"].endswith("1 day(s) of sun")
            # The argument missing and no header: the tool's own validation answers.
            missing = await one(port, call(None, ""))
            assert missing.json()["result"]["isError"]
            # Legacy requests carry no routing headers, Mcp-Param-* included.
            legacy = rpc("tools/call", name="forecast", arguments={"region": "eu"})
            answer = await one(port, post(legacy, "MCP-Protocol-Version: 2025-11-25\r\n"))
            assert answer.json()["result"]["content"][0]["text"] == "eu: 1 day(s) of sun"


# Shutdown


@pytest.mark.anyio
async def test_shutdown_answers_a_running_http_call_and_closes_idle_connections() -> None:
    started, cancelled = anyio.Event(), anyio.Event()
    grace = 0.3
    server = transport(make_app((started, cancelled)), shutdown_grace=grace)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        async with raw(port) as busy, raw(port) as idle:
            with anyio.fail_after(LIMIT):
                await idle.stream.send(post(rpc("tools/list", _meta=MODERN)))
                assert (await idle.answer()).status == 200  # now idle on keep-alive
                await busy.stream.send(post(rpc("tools/call", name="hang", _meta=MODERN)))
                await started.wait()
                stopping = anyio.current_time()
                server.shutdown()
                # The call gets its answer once the grace period is over, not a reset.
                answer = await busy.answer()
                waited = anyio.current_time() - stopping
                assert answer.status == 200
                assert answer.headers["connection"] == "close"
                assert answer.json()["error"] == {"code": -32800, "message": "Server shutting down"}
                assert 0.8 * grace <= waited < grace + 2.0, f"answered after {waited:.3f} s"
                await cancelled.wait()  # and the tool was cancelled
                assert await busy.until_closed() == b""
                assert await idle.until_closed() == b""  # closed cleanly, between requests
    assert server.open_connections == 0
