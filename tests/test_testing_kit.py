"""``securemcp.testing.TestClient``: an app's tools called as over the wire, in memory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import pytest
from pydantic import Field

from securemcp import (
    ConnectionClosed,
    Context,
    Forbidden,
    HandshakeRejected,
    InvalidParams,
    LocalProtocolError,
    Principal,
    Progress,
    RateLimited,
    RateLimiter,
    SecureMCP,
    SecurityPolicy,
    StaticTokenAuthenticator,
    ToolError,
    Unauthenticated,
)
from securemcp.backends.mcp_client import ProgressUpdate
from securemcp.protocol import HandshakeRequest, Limits
from securemcp.security import HandshakeAccepted, HandshakeRefused
from securemcp.testing import TestClient
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import serving

WAIT = 10.0
ANN = Principal("ann", frozenset({"admin"}))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both event loops (the test client serves asyncio's protocol path whatever the transport)."""
    return str(request.param)


def kit_app() -> SecureMCP:
    """Tools for every behaviour a test of one's tools looks at."""
    app = SecureMCP("kit", "Tools for the test kit's tests.")

    @app.tool()
    def add(a: int, b: Annotated[int, Field(ge=0)] = 0) -> int:
        """Add two integers (b not negative)."""
        return a + b

    @app.tool()
    async def fail(reason: str) -> None:
        """Always raise."""
        await anyio.lowlevel.checkpoint()
        raise RuntimeError(f"kaput: {reason}")

    @app.tool(scopes={"admin"})
    async def wipe() -> str:
        """Only for admins."""
        return "wiped"

    @app.tool()
    async def whoami(ctx: Context) -> str | None:
        """The caller's subject (a tool that never awaits: answered in the read's pass)."""
        return None if ctx.principal is None else ctx.principal.subject

    @app.tool()
    async def clock() -> float:
        """The event loop's time, from a tool that never awaits."""
        return anyio.current_time()

    @app.tool()
    async def echo(text: str) -> str:
        """Give ``text`` back."""
        await anyio.lowlevel.checkpoint()
        return text

    @app.tool()
    async def join(room: str, ctx: Context) -> int:
        """Follow ``room``; how many follow it."""
        ctx.subscribe(room)
        return ctx.subscriber_count(room)

    @app.tool()
    async def say(room: str, text: str, ctx: Context) -> int:
        """Tell everyone in ``room``; how many heard it."""
        return ctx.publish(room, "room.said", {"room": room, "text": text})

    @app.tool()
    async def count(steps: int, progress: Progress) -> int:
        """Count to ``steps``, reporting each step."""
        for step in range(1, steps + 1):
            progress.report(step, steps, f"step {step}")
            await anyio.lowlevel.checkpoint()
        return steps

    @app.tool()
    def count_in_a_thread(steps: int, progress: Progress) -> int:
        """The same from a sync tool, which runs in a worker thread."""
        for step in range(1, steps + 1):
            progress.report(step, steps)
        return steps

    return app


@asynccontextmanager
async def socket_client(transport: WebSocketTransport, **options: Any) -> AsyncIterator[Any]:
    """A real client of ``transport`` served on a loopback socket."""
    async with (
        serving(transport) as port,
        WebSocketClient(f"ws://127.0.0.1:{port}", **options) as client,
    ):
        yield client


def outcome(error: BaseException) -> tuple[Any, ...]:
    """What a caller sees of an error: its type and every field the wire carried."""
    return (
        type(error),
        getattr(error, "code", None),
        str(error),
        getattr(error, "data", None),
        getattr(error, "reason", None),
    )


async def failure_of(call: Awaitable[Any]) -> tuple[Any, ...]:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any error: compared below
        await call
    return outcome(caught.value)


async def answer_of(call: Awaitable[Any]) -> Any:
    """The call's result, or what its error carried."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - compared below
        return outcome(exc)


# Connecting


@pytest.mark.anyio
async def test_the_handshake_greets_and_lists_the_tools_with_their_schemas() -> None:
    app = kit_app()
    async with TestClient(app) as client:
        assert client.welcome is not None
        assert client.welcome.message == "Connected to kit"
        assert "add" in client.welcome.tools
        assert client.subprotocol is None
        tools = {tool["name"]: tool for tool in await client.list_tools()}
        # Anonymous: the tools that need a scope are not listed.
        assert list(tools) == [name for name in app.tools if name != "wipe"]
        assert tools["add"]["inputSchema"] == app.tools["add"].input_schema
        assert tools["add"]["description"] == "Add two integers (b not negative)."
        assert repr(client) == "<TestClient ws://testserver/ open>"
    assert client.closed
    assert client.close_code == 1000


@pytest.mark.anyio
async def test_calls_return_what_the_tools_return() -> None:
    async with TestClient(kit_app()) as client:
        assert await client.invoke_tool("add", {"a": 2, "b": 3}) == 5
        assert await client.invoke_tool("echo", {"text": "hi"}) == "hi"
        assert await client.invoke_tool("whoami") is None
        # Inline tools run where anyio knows the event loop, as on a server.
        assert await client.invoke_tool("clock") == pytest.approx(anyio.current_time(), abs=5)
        assert await client.ping() >= 0
        async with anyio.create_task_group() as tg:
            results: dict[int, int] = {}

            async def one(n: int) -> None:
                results[n] = await client.invoke_tool("add", {"a": n})

            for n in range(20):
                tg.start_soon(one, n)
        assert results == {n: n for n in range(20)}


@pytest.mark.anyio
async def test_the_mcp_dialect_negotiates_and_calls() -> None:
    async with TestClient(kit_app(), mcp=True) as client:
        assert client.speaks_mcp
        assert client.subprotocol == "mcp"
        assert client.server_info is not None
        assert client.server_info.name == "kit"
        names = [tool["name"] for tool in await client.list_tools()]
        assert names[:2] == ["add", "fail"]
        result = await client.call_tool("add", {"a": 1, "b": 2})
        assert not result.is_error
        assert result.value() == 3
        assert result.text == "3"
        assert await client.invoke_tool("echo", {"text": "hi"}) == "hi"


# Errors, exactly as the wire gives them


@pytest.mark.anyio
async def test_errors_are_those_a_socket_client_gets() -> None:
    app = kit_app()
    transport = WebSocketTransport(app, shutdown_grace=1, close_timeout=2)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("fail", {"reason": "x"}),  # the tool raised: -32000 with its message
        ("add", {"a": 1, "b": -1}),  # validation: -32602 with pydantic's findings
        ("add", {}),
        ("nope", {}),  # unknown tool
        ("wipe", {}),  # a scope, and no principal: -31001
    ]
    async with socket_client(transport) as wired, TestClient(transport) as kit:
        for tool, params in cases:
            expected = await failure_of(wired.invoke_tool(tool, params))
            assert await failure_of(kit.invoke_tool(tool, params)) == expected
    assert expected[:2] == (Unauthenticated, -31001)
    async with (
        socket_client(transport, mcp=True) as wired,
        TestClient(transport, mcp=True) as kit,
    ):
        for tool, params in cases:
            expected = await answer_of(wired.call_tool(tool, params))
            assert await answer_of(kit.call_tool(tool, params)) == expected
        assert (await kit.call_tool("fail", {"reason": "x"})).is_error
        assert expected[:2] == (Unauthenticated, -31001)


@pytest.mark.anyio
async def test_a_tool_exception_and_a_validation_error_reach_the_caller() -> None:
    async with TestClient(kit_app()) as client:
        with pytest.raises(ToolError, match="kaput: now") as failed:
            await client.invoke_tool("fail", {"reason": "now"})
        assert failed.value.code == -32000
        with pytest.raises(InvalidParams) as invalid:
            await client.invoke_tool("add", {"a": 1, "b": -1})
        assert [entry["loc"] for entry in invalid.value.data] == [["b"]]
        # The connection goes on after both.
        assert await client.invoke_tool("add", {"a": 1}) == 1


@pytest.mark.anyio
async def test_an_oversized_message_closes_with_1009_as_on_a_socket() -> None:
    transport = WebSocketTransport(kit_app(), limits=Limits(max_message_size=4096))
    big = {"text": "x" * 5000}
    async with socket_client(transport) as wired:
        expected = await failure_of(wired.invoke_tool("echo", big))
        assert wired.close_code == 1009
    async with TestClient(transport) as kit:
        assert await kit.invoke_tool("echo", {"text": "x" * 4000}) == "x" * 4000
        assert await failure_of(kit.invoke_tool("echo", big)) == expected
        assert kit.close_code == 1009
    assert expected[0] is ConnectionClosed


# Who connects


@pytest.mark.anyio
async def test_a_principal_gets_its_scopes_and_nothing_more() -> None:
    app = kit_app()
    async with TestClient(app, principal=ANN) as ann:
        assert await ann.invoke_tool("wipe") == "wiped"
        assert await ann.invoke_tool("whoami") == "ann"
    async with TestClient(app, principal=Principal("bob", frozenset({"reader"}))) as bob:
        with pytest.raises(Forbidden) as refused:
            await bob.invoke_tool("wipe")
        assert refused.value.data == {"required_scopes": ["admin"]}
        assert "wipe" not in [tool["name"] for tool in await bob.list_tools()]
    async with TestClient(app, principal=ANN, mcp=True) as ann_mcp:
        assert await ann_mcp.invoke_tool("wipe") == "wiped"


def guarded_transport(**policy: Any) -> WebSocketTransport:
    """The kit app behind a token check: "good" is ann's token, "weak" bob's (no admin)."""
    tokens = StaticTokenAuthenticator({"good": ANN, "weak": Principal("bob")})
    return WebSocketTransport(kit_app(), security=SecurityPolicy(authenticator=tokens, **policy))


@pytest.mark.anyio
async def test_a_token_goes_through_the_transports_security_policy() -> None:
    transport = guarded_transport()
    async with TestClient(transport, token="good") as ann:
        assert await ann.invoke_tool("whoami") == "ann"
        assert await ann.invoke_tool("wipe") == "wiped"
    async with TestClient(transport, token="weak", token_in_subprotocol=True) as bob:
        assert bob.subprotocol is None  # the token entry is never echoed
        with pytest.raises(Forbidden):
            await bob.invoke_tool("wipe")
    for token in ("forged", None):
        with pytest.raises(HandshakeRejected) as rejected:
            async with TestClient(transport, token=token):
                pass
        assert rejected.value.status_code == 401
    # A principal needs no token, even where tokens are required.
    async with TestClient(transport, principal=Principal("cyd")) as cyd:
        assert await cyd.invoke_tool("whoami") == "cyd"


@dataclass(frozen=True, slots=True)
class NoRobots(SecurityPolicy):
    """A policy with a check of its own: no ``User-Agent: robot``."""

    def check_handshake(self, request: HandshakeRequest, *, now: float) -> HandshakeAccepted:
        if ("user-agent", "robot") in request.headers:
            raise HandshakeRefused(403, "no robots")
        return SecurityPolicy.check_handshake(self, request, now=now)


@pytest.mark.anyio
async def test_a_policys_own_checks_apply_to_a_principal_too() -> None:
    transport = WebSocketTransport(kit_app(), security=NoRobots())
    async with TestClient(transport, principal=ANN) as ann:
        assert await ann.invoke_tool("whoami") == "ann"
    with pytest.raises(HandshakeRejected) as refused:
        async with TestClient(transport, principal=ANN, headers={"User-Agent": "robot"}):
            pass
    assert refused.value.status_code == 403


@pytest.mark.anyio
async def test_two_tokens_are_refused_as_on_the_wire() -> None:
    transport = guarded_transport()
    twice = [("Authorization", "Bearer good"), ("Authorization", "Bearer weak")]
    async with serving(transport) as port:
        with pytest.raises(HandshakeRejected) as wired:
            async with WebSocketClient(f"ws://127.0.0.1:{port}", headers=twice):
                pass
    with pytest.raises(HandshakeRejected) as kit:
        async with TestClient(transport, headers=twice):
            pass
    assert kit.value.status_code == wired.value.status_code == 401
    assert kit.value.body == wired.value.body


@pytest.mark.anyio
async def test_the_policys_rate_limit_and_connection_caps_apply() -> None:
    transport = guarded_transport(
        rate_limiter=RateLimiter(rate=0.001, burst=2), max_connections_per_principal=1
    )
    async with TestClient(transport, principal=ANN) as ann:
        assert await ann.invoke_tool("add", {"a": 1}) == 1
        assert await ann.invoke_tool("add", {"a": 2}) == 2
        with pytest.raises(RateLimited) as limited:
            await ann.invoke_tool("add", {"a": 3})
        assert limited.value.data["retry_after"] > 0
        # The clients of one transport count together, as one server's connections.
        with pytest.raises(HandshakeRejected) as capped:
            async with TestClient(transport, token="good"):
                pass
        assert capped.value.status_code == 429
    # The cap counts open connections only; the rate limit counts the principal.
    async with TestClient(transport, token="good") as again:
        with pytest.raises(RateLimited):
            await again.invoke_tool("whoami")


@pytest.mark.anyio
async def test_an_expired_principal_is_closed_with_1008() -> None:
    expired = Principal("old", expires_at=time.time() - 1)
    async with TestClient(kit_app(), principal=expired) as client:
        with anyio.fail_after(WAIT):
            await client.wait_closed()
    assert client.close_code == 1008


# Notifications, progress, cancellation


@pytest.mark.anyio
async def test_clients_of_one_app_hear_each_others_broadcasts() -> None:
    app = kit_app()
    async with TestClient(app, principal=ANN) as ann, TestClient(app) as bob:
        assert await ann.invoke_tool("join", {"room": "lobby"}) == 1
        assert await bob.invoke_tool("join", {"room": "lobby"}) == 2
        assert await bob.invoke_tool("say", {"room": "lobby", "text": "hi"}) == 2
        expected = ("room.said", {"room": "lobby", "text": "hi"})
        with anyio.fail_after(WAIT):
            assert tuple(await anext(aiter(ann.notifications()))) == expected
            assert tuple(await anext(aiter(bob.notifications()))) == expected
        # Another app is another server.
        async with TestClient(kit_app()) as stranger:
            assert await stranger.invoke_tool("say", {"room": "lobby", "text": "?"}) == 0


@pytest.mark.anyio
async def test_on_notification_receives_the_broadcast() -> None:
    app = kit_app()
    heard: list[tuple[str, Any]] = []
    got = anyio.Event()

    def on_note(method: str, params: Any) -> None:
        heard.append((method, params))
        got.set()

    async with TestClient(app, on_notification=on_note) as client:
        await client.invoke_tool("join", {"room": "r"})
        await client.invoke_tool("say", {"room": "r", "text": "me"})
        with anyio.fail_after(WAIT):
            await got.wait()
    assert heard == [("room.said", {"room": "r", "text": "me"})]


@pytest.mark.anyio
@pytest.mark.parametrize("tool", ["count", "count_in_a_thread"])
async def test_progress_reaches_the_caller_before_the_result(tool: str) -> None:
    updates: list[ProgressUpdate] = []
    async with TestClient(kit_app(), mcp=True) as client:
        result = await client.call_tool(tool, {"steps": 3}, on_progress=updates.append)
    assert result.value() == 3
    assert [(u.progress, u.total) for u in updates] == [(1, 3), (2, 3), (3, 3)]


def forever_app() -> tuple[SecureMCP, anyio.Event, anyio.Event]:
    """The kit app with a tool that runs until cancelled: (app, started, cancelled)."""
    app = kit_app()
    started, cancelled = anyio.Event(), anyio.Event()

    @app.tool()
    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    return app, started, cancelled


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_an_mcp_call_the_caller_gives_up_is_cancelled_on_the_server(how: str) -> None:
    app, started, cancelled = forever_app()
    async with TestClient(app, mcp=True) as client:
        if how == "timeout":
            with pytest.raises(TimeoutError):
                await client.call_tool("forever", timeout=0.05)
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "forever")
                with anyio.fail_after(WAIT):
                    await started.wait()
                tg.cancel_scope.cancel()
        # notifications/cancelled reached the server, which cancelled the tool.
        with anyio.fail_after(WAIT):
            await cancelled.wait()
        assert client.pending_count == 0
        assert await client.invoke_tool("echo", {"text": "still here"}) == "still here"


@pytest.mark.anyio
async def test_disconnecting_cancels_the_calls_still_running() -> None:
    app, started, cancelled = forever_app()
    async with TestClient(app) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.invoke_tool, "forever")
            with anyio.fail_after(WAIT):
                await started.wait()
            tg.cancel_scope.cancel()
        # The seed dialect has no way to tell the server: the tool runs on.
        assert await client.invoke_tool("echo", {"text": "x"}) == "x"
        assert not cancelled.is_set()
    with anyio.fail_after(WAIT):
        await cancelled.wait()


# The client's own options and misuse


@pytest.mark.anyio
async def test_client_limits_refuse_a_large_answer() -> None:
    async with TestClient(kit_app(), limits=Limits(max_message_size=1000)) as client:
        assert await client.invoke_tool("echo", {"text": "short"}) == "short"
        with pytest.raises(ConnectionClosed):
            await client.invoke_tool("echo", {"text": "y" * 2000})
    assert client.close_code == 1009


@pytest.mark.anyio
async def test_resources_open_with_the_first_client_and_close_with_it() -> None:
    app = kit_app()
    log: list[str] = []

    class Resource:
        async def __aenter__(self) -> None:
            log.append("open")

        async def __aexit__(self, *exc: object) -> None:
            log.append("close")

    app.uses(Resource())
    async with TestClient(app) as first:
        async with TestClient(app) as second:
            assert await second.invoke_tool("add", {"a": 1}) == 1
        assert log == ["open"]
        assert await first.invoke_tool("add", {"a": 2}) == 2
    assert log == ["open", "close"]
    async with TestClient(app):
        assert log == ["open", "close", "open"]
    assert log == ["open", "close", "open", "close"]


class FlakyResource:
    """An app resource whose first opening fails (once ``gate`` is set, if given)."""

    def __init__(self, gate: anyio.Event | None = None) -> None:
        self.gate = gate
        self.log: list[str] = []

    async def __aenter__(self) -> None:
        self.log.append("open")
        if len(self.log) == 1:
            if self.gate is not None:
                await self.gate.wait()
            raise RuntimeError("database down")

    async def __aexit__(self, *exc: object) -> None:
        self.log.append("close")


@pytest.mark.anyio
async def test_a_resource_that_fails_to_open_fails_the_connect_and_nothing_else() -> None:
    app = kit_app()
    attempts = app.uses(FlakyResource()).log
    client = TestClient(app)
    with pytest.raises(RuntimeError, match="database down"):
        await client.connect()
    assert not client.serving
    async with TestClient(app) as second:
        assert await second.invoke_tool("add", {"a": 1}) == 1
    assert attempts == ["open", "open", "close"]


@pytest.mark.anyio
async def test_a_client_waiting_on_a_failed_opening_opens_the_resources_itself() -> None:
    app = kit_app()
    release = anyio.Event()
    attempts = app.uses(FlakyResource(release)).log
    failed: list[BaseException] = []
    done = anyio.Event()

    async def first() -> None:
        with pytest.raises(RuntimeError) as caught:
            await TestClient(app).connect()
        failed.append(caught.value)

    async def second() -> None:
        async with TestClient(app) as client:
            async with TestClient(app) as third:  # shares what the second opened
                assert await third.invoke_tool("add", {"a": 3}) == 3
            assert await client.invoke_tool("add", {"a": 2}) == 2
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        release.set()
        with anyio.fail_after(WAIT):
            await done.wait()
    assert [str(error) for error in failed] == ["database down"]
    assert attempts == ["open", "open", "close"]


@pytest.mark.anyio
async def test_clients_connecting_at_once_wait_for_the_resources() -> None:
    app = kit_app()
    log: list[str] = []
    opened = anyio.Event()

    class Slow:
        async def __aenter__(self) -> None:
            log.append("opening")
            await opened.wait()
            log.append("open")

        async def __aexit__(self, *exc: object) -> None:
            log.append("close")

    @app.tool()
    async def resource_state() -> str:
        return log[-1]

    app.uses(Slow())
    seen: list[str] = []
    all_seen = anyio.Event()

    async def one_client(started: anyio.Event) -> None:
        started.set()
        async with TestClient(app) as client:
            seen.append(await client.invoke_tool("resource_state"))
            if len(seen) == 3:
                all_seen.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            started = anyio.Event()
            tg.start_soon(one_client, started)
            await started.wait()
        await anyio.wait_all_tasks_blocked()
        assert log == ["opening"]
        opened.set()
        with anyio.fail_after(WAIT):
            await all_seen.wait()
        tg.cancel_scope.cancel()
    assert seen == ["open"] * 3
    assert log == ["opening", "open", "close"]


def test_misuse_is_refused_up_front() -> None:
    with pytest.raises(TypeError, match="SecureMCP app or a WebSocketTransport"):
        TestClient("ws://localhost:8765")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        TestClient(kit_app(), principal=ANN, token="good")
    with pytest.raises(TypeError, match="Principal"):
        TestClient(kit_app(), principal="ann")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_connect_twice_is_refused_and_a_failed_connect_leaves_nothing() -> None:
    app = kit_app()
    client = TestClient(app)
    async with client:
        with pytest.raises(LocalProtocolError, match="already"):
            await client.connect()
    assert not client.serving
    await client.aclose()  # again: harmless
    refused = TestClient(guarded_transport(), token="forged")
    with pytest.raises(HandshakeRejected):
        await refused.connect()
    assert not refused.serving
    assert refused.closed


@pytest.mark.anyio
async def test_a_cancelled_body_still_closes_the_client_and_its_server() -> None:
    app = kit_app()
    with anyio.move_on_after(0.05):
        async with TestClient(app) as client:
            await anyio.sleep_forever()
    assert client.closed
    assert not client.serving
    async with TestClient(app) as after:
        assert await after.invoke_tool("add", {"a": 4}) == 4


# The pytest fixture


@pytest.mark.anyio
async def test_the_fixture_makes_test_clients(
    securemcp_client: Callable[..., TestClient],
) -> None:
    async with securemcp_client(kit_app(), principal=ANN) as client:
        assert isinstance(client, TestClient)
        assert await client.invoke_tool("wipe") == "wiped"
