"""MCP Streamable HTTP served by ``WebSocketTransport`` on its own port (``mcp_path``).

Clients: the official SDK 2.x client (``tests/sdk2_http_client.py``, run by the
SDK 2.x environment's interpreter), our :class:`~securemcp.transport.HTTPClient`,
and raw bytes where a hostile peer is needed. Every async test runs on asyncio,
trio and asyncio's anyio path, each network wait bounded.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from securemcp import (
    Principal,
    Progress,
    RPCError,
    SecureMCP,
    SecurityPolicy,
    StaticTokenAuthenticator,
)
from securemcp.backends.mcp_client import ProgressUpdate
from securemcp.origin import OriginPolicy
from securemcp.protocol import Limits
from securemcp.ratelimit import RateLimiter
from securemcp.transport import HTTPClient, HTTPRejected, WebSocketTransport

from .helpers import serving

LIMIT = 20
"""Seconds any one test may take on the network before it is a failure."""
CLIENT_SCRIPT = Path(__file__).with_name("sdk2_http_client.py")
ADMIN = "admin-token-0123456789"
USER = "user-token-0123456789"
MODERN = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def make_app(hang_events: tuple[anyio.Event, anyio.Event] | None = None) -> SecureMCP:
    """The test tools; ``hang_events`` are set when ``hang`` starts and when it is cancelled."""
    app = SecureMCP("http-test-server", "1.0")

    @app.tool()
    async def echo(message: str) -> str:
        """Return the message (runs inline: it never suspends)."""
        return message

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers (a sync tool: runs in a worker thread)."""
        return a + b

    @app.tool()
    async def count(steps: int, progress: Progress) -> str:
        """Report progress ``steps`` times, then return."""
        for i in range(1, steps + 1):
            progress.report(i, steps, f"step {i}")
            await anyio.sleep(0.01)
        return f"counted {steps}"

    @app.tool()
    async def hang() -> str:
        """Wait until cancelled."""
        if hang_events is not None:
            hang_events[0].set()
        try:
            await anyio.sleep_forever()
        finally:
            if hang_events is not None:
                hang_events[1].set()
        return "never"  # pragma: no cover

    @app.tool(scopes={"admin"})
    def purge() -> str:
        return "purged"

    return app


def transport(app: SecureMCP | None = None, **options: Any) -> WebSocketTransport:
    options.setdefault("shutdown_grace", 0.5)
    options.setdefault("close_timeout", 1.0)
    return WebSocketTransport(make_app() if app is None else app, **options)


def token_policy(**options: Any) -> SecurityPolicy:
    authenticator = StaticTokenAuthenticator(
        {ADMIN: Principal("alice", frozenset({"admin"})), USER: Principal("bob")}
    )
    return SecurityPolicy(authenticator=authenticator, **options)


# Raw HTTP


def routing_headers(body: bytes) -> str:
    """The 2026-07-28 routing headers a client mirrors from an enveloped request's body."""
    try:
        message = json.loads(body)
    except ValueError:
        return ""
    params = message.get("params") if isinstance(message, dict) else None
    if not isinstance(params, dict) or "_meta" not in params:
        return ""
    version = params["_meta"]["io.modelcontextprotocol/protocolVersion"]
    headers = f"MCP-Protocol-Version: {version}\r\nMcp-Method: {message['method']}\r\n"
    if message["method"] == "tools/call" and isinstance(params.get("name"), str):
        headers += f"Mcp-Name: {params['name']}\r\n"
    return headers


def post(body: bytes | str, headers: str = "", path: str = "/mcp", *, route: bool = True) -> bytes:
    """A POST of ``body``; an enveloped request gets its routing headers unless ``route=False``."""
    data = body.encode() if isinstance(body, str) else body
    if route:
        headers = routing_headers(data) + headers
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\n{headers}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def rpc(method: str, request_id: int | None = 1, **params: Any) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        message["id"] = request_id
    return json.dumps(message)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """A raw TCP client reading HTTP answers framed by Content-Length."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.closed = False

    async def _more(self) -> None:
        try:
            data = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            self.closed = True
            raise
        self.buffer += data

    async def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            await self._more()
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        return Answer(int(lines[0].split(" ")[1]), headers, rest[:length])

    async def until_closed(self) -> bytes:
        try:
            while True:
                await self._more()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return self.buffer


@asynccontextmanager
async def raw(port: int) -> AsyncIterator[Raw]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        yield Raw(stream)


async def one(port: int, data: bytes) -> Answer:
    async with raw(port) as client:
        await client.stream.send(data)
        return await client.answer()


# The official SDK 2.x client


async def sdk_client(python: Path, url: str, *args: str) -> dict[str, Any]:
    result = await anyio.run_process([str(python), str(CLIENT_SCRIPT), url, *args], check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace"))
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    output: dict[str, Any] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return output


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_lists_and_calls(mcp2_python: Path, mode: str) -> None:
    args = ("--legacy",) if mode == "legacy" else ()
    async with serving(transport()) as port:
        with anyio.fail_after(LIMIT + 10):
            out = await sdk_client(mcp2_python, f"http://127.0.0.1:{port}/mcp", *args)
    assert out["protocol_version"] == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert out["tools"] == ["add", "count", "echo", "hang"]
    assert out["echo"] == {"text": "héllo ✓", "isError": False}
    assert out["added"] == {"text": "5", "isError": False}
    assert out["bad"]["isError"]
    assert "valid integer" in out["bad"]["text"]
    assert "Unknown tool: nope" in json.dumps(out["unknown"])
    assert out["count"] == {"text": "counted 3", "isError": False}
    assert out["progress"] == [[i, 3, f"step {i}"] for i in (1, 2, 3)]


# Our HTTPClient


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_our_client_lists_calls_and_sees_progress(protocol: Any) -> None:
    seen: list[ProgressUpdate] = []
    async with serving(transport()) as port:
        with anyio.fail_after(LIMIT):
            url = f"http://127.0.0.1:{port}/mcp"
            async with HTTPClient(url, protocol=protocol) as client:
                tools = await client.list_tools()
                echoed = await client.call_tool("echo", {"message": "hi"})
                assert await client.invoke_tool("add", {"a": 2, "b": 40}) == 42
                bad = await client.call_tool("add", {"a": "x", "b": 1})
                counted = await client.call_tool("count", {"steps": 3}, on_progress=seen.append)
                quiet = await client.call_tool("count", {"steps": 2})
                stateless, version = client.stateless, client.protocol_version
    assert {tool["name"] for tool in tools} == {"echo", "add", "count", "hang"}
    assert echoed.text == "hi"
    assert bad.is_error
    assert "valid integer" in bad.text
    assert counted.text == "counted 3"
    assert seen == [ProgressUpdate(i, 3, f"step {i}") for i in (1, 2, 3)]
    assert quiet.text == "counted 2"
    assert stateless == (protocol == "auto")
    assert version == ("2026-07-28" if protocol == "auto" else "2025-11-25")


@pytest.mark.anyio
async def test_auth_is_refused_without_and_accepted_with_a_token() -> None:
    async with serving(transport(security=token_policy())) as port:
        with anyio.fail_after(LIMIT):
            url = f"http://127.0.0.1:{port}/mcp"
            refused = await one(port, post(rpc("server/discover", _meta=MODERN)))
            assert refused.status == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            bad = await one(port, post(rpc("tools/list"), "Authorization: Bearer wrong\r\n"))
            assert bad.status == 401
            with pytest.raises(HTTPRejected) as rejected:
                async with HTTPClient(url) as client:
                    await client.list_tools()
            assert rejected.value.status_code == 401
            async with HTTPClient(url, token=ADMIN) as client:
                assert await client.invoke_tool("purge") == "purged"
            async with HTTPClient(url, token=USER) as client:
                names = {tool["name"] for tool in await client.list_tools()}
                assert "purge" not in names  # bob lacks the scope: it is not listed
                denied = await one(
                    port,
                    post(
                        rpc("tools/call", name="purge", _meta=MODERN),
                        f"Authorization: Bearer {USER}\r\n",
                    ),
                )
    assert denied.status == 200
    assert denied.json()["error"]["code"] == -31003  # Insufficient scope, as on the WebSocket


@pytest.mark.anyio
async def test_a_refused_origin_gets_403_and_rate_limits_apply() -> None:
    policy = SecurityPolicy(
        origins=OriginPolicy(["https://app.example"]), rate_limiter=RateLimiter(rate=0.01, burst=2)
    )
    async with serving(transport(security=policy)) as port:
        with anyio.fail_after(LIMIT):
            origin = await one(port, post(rpc("tools/list"), "Origin: https://evil.example\r\n"))
            assert origin.status == 403
            call = post(rpc("tools/call", name="echo", arguments={"message": "x"}, _meta=MODERN))
            async with raw(port) as client:
                await client.stream.send(call * 3)
                answers = [(await client.answer()).json() for _ in range(3)]
    assert [a.get("result", {}).get("content") for a in answers[:2]] == [
        [{"type": "text", "text": "x"}]
    ] * 2
    assert answers[2]["error"]["code"] == -31029


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


def failing_app() -> SecureMCP:
    app = SecureMCP("failing")

    @app.tool()
    def boom() -> None:
        raise RuntimeError("kaput")

    @app.tool()
    async def inline_boom() -> None:
        raise RuntimeError("kaput inline")

    @app.tool()
    def opaque() -> object:
        return object()

    @app.tool()
    def teapot() -> None:
        raise RPCError("teapot", code=-31418)

    return app


async def call_result(port: int, name: str) -> dict[str, Any]:
    answer = await one(port, post(rpc("tools/call", name=name, _meta=MODERN)))
    assert answer.status == 200
    message: dict[str, Any] = answer.json()
    return message


@pytest.mark.anyio
@pytest.mark.parametrize("masked", [False, True])
async def test_tool_failures_are_answered_as_on_the_websocket(masked: bool) -> None:
    policy = SecurityPolicy(mask_errors=masked)
    async with serving(transport(failing_app(), security=policy)) as port:
        with anyio.fail_after(LIMIT):
            boom = await call_result(port, "boom")
            inline = await call_result(port, "inline_boom")
            opaque = await call_result(port, "opaque")
            teapot = await call_result(port, "teapot")
    for result in (boom, inline):
        assert result["result"]["isError"]
        assert result["result"]["resultType"] == "complete"
        text = result["result"]["content"][0]["text"]
        assert ("kaput" in text) != masked
        assert ("correlation id" in text) == masked
    assert opaque["error"]["code"] == -32603
    assert teapot["error"] == {"code": -31418, "message": "teapot"}


@pytest.mark.anyio
async def test_a_failing_authenticator_gets_500_and_a_full_server_503() -> None:
    class Broken(StaticTokenAuthenticator):
        def authenticate(self, token: str, *, now: float) -> Principal:
            raise RuntimeError(token)

    broken = SecurityPolicy(authenticator=Broken({}))
    async with serving(transport(security=broken)) as port:
        with anyio.fail_after(LIMIT):
            answer = await one(port, post(rpc("tools/list"), "Authorization: Bearer t0k3n\r\n"))
    assert (answer.status, answer.body) == (500, b"authentication failed\n")
    async with serving(transport(max_connections=1)) as port:
        with anyio.fail_after(LIMIT):
            async with raw(port) as first:
                await first.stream.send(post(rpc("tools/list", _meta=MODERN)))
                assert (await first.answer()).status == 200
                refused = await one(port, post(rpc("tools/list", _meta=MODERN)))
    assert refused.status == 503


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
            # Legacy requests carry no envelope, and no routing headers are asked of them.
            legacy = await one(
                port, post(rpc("tools/list"), "MCP-Protocol-Version: 2025-11-25\r\n")
            )
            assert legacy.status == 200
