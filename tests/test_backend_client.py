"""WebSocketClient over real loopback sockets, on asyncio and trio.

Most tests talk to :class:`MiniServer`, a small server written here on
``anyio.create_tcp_listener`` and the sans-I/O :class:`ServerConnection`,
because the client must also cope with servers that misbehave: that drop the
connection mid-call, never answer, refuse the upgrade, push notifications or
answer out of order. One test talks to a server written with the independent
``websockets`` library.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from anyio.streams.tls import TLSListener

from securemcp import (
    ConnectionClosed,
    HandshakeRejected,
    InvalidParams,
    LocalProtocolError,
    MethodNotFound,
    RequestTimeout,
    SecureMCP,
    SecureMCPError,
    ToolError,
    ToolNotFound,
)
from securemcp.backends.client import Notification, WebSocketClient
from securemcp.backends.server import WebSocketTransport
from securemcp.protocol import (
    ConnectionState,
    HandshakeRequest,
    ServerConnection,
    ToolCall,
)

LIMIT = 10  # seconds: every test ends well within this, or fails


def make_app() -> SecureMCP:
    app = SecureMCP("client-test")

    @app.tool()
    async def echo(message: str) -> dict[str, str]:
        """Echo a message back."""
        return {"echoed": message}

    @app.tool()
    def add(a: int, b: int) -> int:
        return a + b

    @app.tool()
    def boom() -> None:
        raise RuntimeError("kaboom")

    # Tools the mini server handles itself (see MiniServer._run); their
    # functions exist only so that the app validates and lists them.
    @app.tool()
    def hang() -> None: ...

    @app.tool()
    def drop() -> None: ...

    @app.tool()
    def bye() -> None: ...

    @app.tool()
    def shout(count: int) -> None: ...

    @app.tool()
    def gather(value: int, expect: int) -> None: ...

    @app.tool()
    def late() -> None: ...

    @app.tool()
    def release() -> None: ...

    return app


@dataclass
class MiniServer:
    """A test server: ``handshake`` is "accept", "silent" (never answers), "eof" (hangs up)
    or "deaf" (accepts, then never reads again, so it never answers a close)."""

    app: SecureMCP = field(default_factory=make_app)
    reject: int | None = None
    handshake: str = "accept"
    requests: list[HandshakeRequest] = field(default_factory=list)
    _gathered: list[ToolCall] = field(default_factory=list)
    _late: list[ToolCall] = field(default_factory=list)

    async def _serve_one(self, stream: anyio.abc.ByteStream) -> None:
        conn = ServerConnection(self.app)
        lock = anyio.Lock()

        async def flush() -> None:
            async with lock:
                data = conn.data_to_send()
                if data:
                    await stream.send(data)

        async with stream, anyio.create_task_group() as tg:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    conn.receive_eof()
                else:
                    if self.handshake == "silent":
                        continue
                    if self.handshake == "eof":
                        break
                    conn.receive_data(data)
                for event in conn.events_received():
                    if isinstance(event, HandshakeRequest):
                        self.requests.append(event)
                        if self.reject is not None:
                            conn.reject(self.reject, b"go away")
                        else:
                            offered = event.subprotocols
                            conn.accept(offered[0] if offered else None)
                    elif isinstance(event, ToolCall):
                        tg.start_soon(self._run, conn, event, flush, stream)
                await flush()  # after a close, this sends our close reply
                if self.handshake == "deaf" and conn.state is ConnectionState.OPEN:
                    await anyio.sleep_forever()
                if conn.state is ConnectionState.CLOSED:
                    break
            tg.cancel_scope.cancel()

    async def _run(
        self,
        conn: ServerConnection,
        call: ToolCall,
        flush: Callable[[], Any],
        stream: anyio.abc.ByteStream,
    ) -> None:
        name = call.tool.name
        if name == "hang":
            await anyio.sleep_forever()
        elif name == "drop":
            await anyio.aclose_forcefully(stream)
            return
        elif name == "bye":
            conn.close(1001, "going away")
        elif name == "shout":
            for n in range(call.arguments["count"]):
                conn.notify("chat/message", {"n": n})
            conn.complete(call, call.arguments["count"])
        elif name == "gather":
            # Answer nothing until every expected call is here, then answer
            # them newest first: the client must match answers by id.
            self._gathered.append(call)
            if len(self._gathered) == call.arguments["expect"]:
                for held in reversed(self._gathered):
                    conn.complete(held, held.arguments["value"])
        elif name == "late":
            self._late.append(call)
        elif name == "release":
            for held in self._late:
                conn.complete(held, "too late")
            conn.complete(call, "released")
        else:
            try:
                result = call.tool.fn(**call.arguments)
                if call.tool.is_async:
                    result = await result
            except RuntimeError as exc:  # what make_app's failing tool raises
                conn.fail(call, exc)
            else:
                conn.complete(call, result)
        await flush()

    async def serve(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=0
        )
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        if tls is not None:
            listener = TLSListener(listener, tls, standard_compatible=False)
        async with listener:
            task_status.started(port)
            await listener.serve(self._serve_one)


@asynccontextmanager
async def running(
    server: MiniServer | None = None, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[MiniServer, str]]:
    """Run ``server`` (a plain :class:`MiniServer` by default); yield it and its URL."""
    server = server or MiniServer()
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: server.serve(tls=tls, task_status=task_status))
        yield server, f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@asynccontextmanager
async def real_server(app: SecureMCP, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Run the real server backend (``WebSocketTransport``) on a free port; yield the port."""
    transport = WebSocketTransport(app, ssl=tls)
    async with anyio.create_task_group() as tg:
        yield await tg.start(transport.serve, "127.0.0.1", 0)
        tg.cancel_scope.cancel()


# The seed README's snippet, against the real server backend


@pytest.mark.anyio
async def test_seed_readme_client_snippet_runs_as_written() -> None:
    app = SecureMCP("my-websocket-app")

    @app.tool()
    async def my_tool(param: str) -> dict[str, str]:
        return {"got": param}

    with anyio.fail_after(LIMIT):
        async with real_server(app) as port:
            # The seed README's code; only the port differs (tests use a free one).
            from securemcp.transport import WebSocketClient

            async with WebSocketClient(f"ws://localhost:{port}") as client:
                tools = await client.list_tools()
                result = await client.invoke_tool("my_tool", {"param": "value"})
    assert [tool["name"] for tool in tools] == ["my_tool"]
    assert result == {"got": "value"}


@pytest.mark.anyio
async def test_against_the_real_server_backend(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_contexts
    results: dict[int, Any] = {}

    async def call(client: WebSocketClient, value: int) -> None:
        results[value] = await client.invoke_tool("add", {"a": value, "b": 1000})

    with anyio.fail_after(LIMIT):
        async with (
            real_server(make_app(), tls=server_ctx) as port,
            WebSocketClient(f"wss://localhost:{port}", ssl=client_ctx) as client,
        ):
            assert await client.invoke_tool("echo", {"message": "hi"}) == {"echoed": "hi"}
            async with anyio.create_task_group() as tg:
                for value in range(50):
                    tg.start_soon(call, client, value)
            with pytest.raises(ToolNotFound):
                await client.invoke_tool("nope")
            with pytest.raises(InvalidParams):
                await client.invoke_tool("add", {"a": 1})
            with pytest.raises(ToolError) as failed:
                await client.invoke_tool("boom")
            assert await client.ping() >= 0
            assert client.welcome is not None
    assert results == {value: value + 1000 for value in range(50)}
    assert failed.value.code == -32000
    assert client.close_code == 1000


# Round trips


@pytest.mark.anyio
async def test_round_trips_and_welcome() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            tools = await client.list_tools()
            echoed = await client.invoke_tool("echo", {"message": "hi"})
            total = await client.invoke_tool("add", {"a": 2, "b": 3})
            rtt = await client.ping()
            pong = await client.request("ping")
            assert client.pending_count == 0
            assert client.welcome is not None
            welcome = client.welcome
    names = {tool["name"] for tool in tools}
    assert {"echo", "add"} <= names
    echo_schema = next(t for t in tools if t["name"] == "echo")["inputSchema"]
    assert echo_schema["properties"]["message"]["type"] == "string"
    assert echoed == {"echoed": "hi"}
    assert total == 5
    assert 0 <= rtt < LIMIT
    assert pong == {"pong": True}
    assert welcome.message == "Connected to client-test"
    assert "echo" in welcome.tools
    assert client.closed
    assert client.close_code == 1000


@pytest.mark.anyio
async def test_headers_path_and_subprotocol_reach_the_server() -> None:
    with anyio.fail_after(LIMIT):
        async with (
            running() as (server, url),
            WebSocketClient(
                url + "/mcp?room=1",
                headers={"Authorization": "Bearer s3cret"},
                subprotocols=["mcp", "other"],
            ) as client,
        ):
            await client.ping()
    (request,) = server.requests
    assert request.path == "/mcp?room=1"
    assert request.header("authorization") == "Bearer s3cret"
    assert request.subprotocols == ("mcp", "other")
    assert client.subprotocol == "mcp"


@pytest.mark.anyio
async def test_fifty_concurrent_calls_get_their_own_answers() -> None:
    results: dict[int, Any] = {}

    async def call(client: WebSocketClient, value: int) -> None:
        results[value] = await client.invoke_tool("gather", {"value": value, "expect": 50})

    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            async with anyio.create_task_group() as tg:
                for value in range(50):
                    tg.start_soon(call, client, value)
            assert client.pending_count == 0
    # The server answered in reverse order; each caller still got its own value.
    assert results == {value: value for value in range(50)}


# Typed errors


@pytest.mark.anyio
async def test_error_answers_raise_typed_exceptions() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with pytest.raises(ToolNotFound) as not_found:
                await client.invoke_tool("nope")
            with pytest.raises(InvalidParams) as invalid:
                await client.invoke_tool("add", {"a": "x", "b": 1})
            with pytest.raises(ToolError) as failed:
                await client.invoke_tool("boom")
            with pytest.raises(MethodNotFound) as unknown:
                await client.request("no_such_method")
            # Not JSON: refused before anything is sent.
            with pytest.raises(ValueError, match="Unable to serialize"):
                await client.invoke_tool("echo", {"message": object()})
            # The connection survives error answers.
            assert await client.invoke_tool("add", {"a": 1, "b": 1}) == 2
    assert not_found.value.code == -32601
    assert not_found.value.message == "Tool not found: nope"
    assert invalid.value.code == -32602
    assert invalid.value.data[0]["loc"] == ["a"]
    assert failed.value.code == -32000
    assert "kaboom" in failed.value.message
    assert not isinstance(unknown.value, ToolNotFound)
    for exc in (not_found.value, invalid.value, failed.value, unknown.value):
        assert isinstance(exc, SecureMCPError)


# Timeouts and the pending table


@pytest.mark.anyio
async def test_timed_out_call_leaves_the_pending_table() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with pytest.raises(RequestTimeout):
                await client.invoke_tool("hang", timeout=0.2)
            assert client.pending_count == 0
            with pytest.raises(TimeoutError):  # RequestTimeout is a TimeoutError too
                await client.request("invoke_tool", {"tool_name": "hang"}, timeout=0.05)
            assert client.pending_count == 0
            assert await client.ping() >= 0


@pytest.mark.anyio
async def test_late_answer_to_a_forgotten_call_is_dropped() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url, timeout=0.2) as client:
            with pytest.raises(RequestTimeout):
                await client.invoke_tool("late")
            # The server now answers the forgotten call, then this one.
            assert await client.invoke_tool("release", timeout=None) == "released"
            assert client.pending_count == 0
            assert await client.invoke_tool("echo", {"message": "still fine"}) == {
                "echoed": "still fine"
            }


@pytest.mark.anyio
async def test_cancelled_call_leaves_the_pending_table() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with anyio.move_on_after(0.1) as scope:
                await client.invoke_tool("hang")
            assert scope.cancelled_caught
            assert client.pending_count == 0


# The connection ends


@pytest.mark.anyio
async def test_pending_calls_fail_at_once_when_the_server_drops() -> None:
    failures: list[BaseException] = []

    async def hang(client: WebSocketClient) -> None:
        try:
            await client.invoke_tool("hang")
        except ConnectionClosed as exc:
            failures.append(exc)

    # The default timeout is 30 s: only the drop can end these calls in time.
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(hang, client)
                with pytest.raises(ConnectionClosed) as dropped:
                    await client.invoke_tool("drop")
            assert client.pending_count == 0
            assert client.closed
            with pytest.raises(ConnectionClosed):
                await client.ping()
    assert len(failures) == 5
    assert dropped.value.close_code == 1006
    assert client.close_code == 1006


@pytest.mark.anyio
async def test_server_close_ends_calls_with_its_code() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.invoke_tool("bye")
            await client.wait_closed()
    assert closed.value.close_code == 1001
    assert closed.value.reason == "going away"
    assert (client.close_code, client.close_reason) == (1001, "going away")


@pytest.mark.anyio
async def test_calls_after_close_raise_connection_closed() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url):
            client = WebSocketClient(url)
            with pytest.raises(LocalProtocolError):
                await client.ping()
            await client.aclose()  # harmless before connect
            async with client:
                await client.ping()
            with pytest.raises(ConnectionClosed) as after:
                await client.ping()
            await client.aclose()  # and after close
            with pytest.raises(LocalProtocolError):
                await client.connect()
    assert after.value.close_code == 1000


@pytest.mark.anyio
async def test_close_without_the_servers_answer_is_bounded_by_close_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(handshake="deaf")) as (_, url):
            async with WebSocketClient(url, close_timeout=0.2) as client:
                started = anyio.current_time()
            elapsed = anyio.current_time() - started
    assert 0.2 <= elapsed < 3  # the default close_timeout (5 s) was not used
    assert client.close_code == 1006  # the close handshake never completed


@pytest.mark.anyio
async def test_body_exception_and_cancellation_pass_through_unwrapped() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url):
            # On trio a task group spanning the body would wrap this in an
            # ExceptionGroup; pytest.raises(KeyError) would then fail.
            with pytest.raises(KeyError):
                async with WebSocketClient(url) as client:
                    raise KeyError("mine")
            assert client.close_code == 1000
            with anyio.move_on_after(0.2) as scope:
                async with WebSocketClient(url) as client:
                    await client.invoke_tool("hang", timeout=None)
            assert scope.cancelled_caught
            assert client.close_code == 1000


# Notifications


@pytest.mark.anyio
async def test_notifications_reach_the_handler() -> None:
    seen: list[tuple[str, Any]] = []
    got_all = anyio.Event()

    async def on_note(method: str, params: Any) -> None:
        seen.append((method, params))
        if len(seen) == 3:
            got_all.set()

    with anyio.fail_after(LIMIT):
        async with (
            running() as (_, url),
            WebSocketClient(url, on_notification=on_note) as client,
        ):
            assert await client.invoke_tool("shout", {"count": 3}) == 3
            await got_all.wait()
            with pytest.raises(LocalProtocolError):
                client.notifications()
    assert seen == [("chat/message", {"n": n}) for n in range(3)]


@pytest.mark.anyio
async def test_failing_handler_is_logged_and_the_connection_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Any] = []
    both = anyio.Event()

    def on_note(method: str, params: Any) -> None:
        calls.append(params)
        if len(calls) == 2:
            both.set()
        if params["n"] == 0:
            raise ValueError("handler bug")

    with anyio.fail_after(LIMIT), caplog.at_level(logging.ERROR, "securemcp.client"):
        async with running() as (_, url), WebSocketClient(url, on_notification=on_note) as client:
            await client.invoke_tool("shout", {"count": 2})
            await both.wait()  # the first failure did not stop the second delivery
            assert await client.ping() >= 0
    assert calls == [{"n": 0}, {"n": 1}]
    assert caplog.text.count("on_notification handler failed") == 1


@pytest.mark.anyio
async def test_notifications_iterator_and_its_end() -> None:
    with anyio.fail_after(LIMIT):
        async with running() as (_, url), WebSocketClient(url) as client:
            await client.invoke_tool("shout", {"count": 2})
            notes = client.notifications()
            first = await notes.__anext__()
            with pytest.raises(ConnectionClosed):
                await client.invoke_tool("drop")
            # The rest of the buffer, then the end: the connection is over.
            rest = [note async for note in notes]
    assert first == Notification("chat/message", {"n": 0})
    assert first.method == "chat/message"
    assert rest == [("chat/message", {"n": 1})]


@pytest.mark.anyio
async def test_lagging_consumer_loses_the_oldest_notifications() -> None:
    with anyio.fail_after(LIMIT):
        async with (
            running() as (_, url),
            WebSocketClient(url, max_queued_notifications=2) as client,
        ):
            await client.invoke_tool("shout", {"count": 5})
            assert client.dropped_notifications == 3
            notes = client.notifications()
            kept = [await notes.__anext__(), await notes.__anext__()]
    assert [params["n"] for _, params in kept] == [3, 4]


# Opening the connection


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 503])
async def test_refused_upgrade_raises_handshake_rejected(status: int) -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(reject=status)) as (_, url):
            with pytest.raises(HandshakeRejected) as rejected:
                async with WebSocketClient(url):
                    pytest.fail("the upgrade was refused")  # pragma: no cover
    assert rejected.value.status_code == status
    assert rejected.value.body == b"go away"
    assert isinstance(rejected.value, SecureMCPError)


@pytest.mark.anyio
async def test_closed_port_raises_connection_refused_promptly() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with anyio.fail_after(LIMIT), pytest.raises(ConnectionRefusedError) as refused:
        async with WebSocketClient(f"ws://127.0.0.1:{port}"):
            pytest.fail("nothing listens there")  # pragma: no cover
    assert f"127.0.0.1:{port}" in str(refused.value)
    # A name may resolve to several addresses (::1 and 127.0.0.1): still one plain error.
    with anyio.fail_after(LIMIT), pytest.raises(ConnectionRefusedError):
        async with WebSocketClient(f"ws://localhost:{port}"):
            pytest.fail("nothing listens there")  # pragma: no cover


@pytest.mark.anyio
async def test_silent_server_hits_the_connect_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(handshake="silent")) as (_, url):
            client = WebSocketClient(url, connect_timeout=0.2)
            with pytest.raises(RequestTimeout, match="could not connect"):
                async with client:
                    pytest.fail("no handshake answer came")  # pragma: no cover
            with pytest.raises(LocalProtocolError, match="not connected"):
                await client.ping()


@pytest.mark.anyio
async def test_server_hanging_up_during_handshake_raises_connection_closed() -> None:
    with anyio.fail_after(LIMIT):
        async with running(MiniServer(handshake="eof")) as (_, url):
            with pytest.raises(ConnectionClosed) as closed:
                async with WebSocketClient(url):
                    pytest.fail("the server hung up")  # pragma: no cover
    assert closed.value.close_code == 1006


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("http://example.com", {}, "unsupported URL scheme"),
        ("ws://user:pw@example.com", {}, "credentials"),
        ("ws://example.com/#frag", {}, "fragment"),
        ("ws:///path", {}, "no host"),
        ("ws://example.com:99999", {}, "invalid port"),
        ("ws://example.com", {"ssl": True}, "only valid with a wss"),
        ("wss://example.com", {"ssl": False}, "needs TLS"),
        ("ws://example.com", {"headers": {"Host": "x"}}, "set by the WebSocket handshake"),
        ("ws://example.com", {"headers": [("X-A", "a\r\nB: b")]}, "invalid characters"),
        ("ws://example.com", {"headers": {"bad name": "x"}}, "invalid header name"),
        ("ws://example.com", {"max_queued_notifications": 0}, "at least 1"),
    ],
)
def test_bad_arguments_raise_value_error(url: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebSocketClient(url, **kwargs)


def test_subprotocols_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        WebSocketClient("ws://example.com", subprotocols="mcp")


def test_url_defaults_and_repr() -> None:
    client = WebSocketClient("wss://Example.com/a?b=1")
    assert repr(client) == "<WebSocketClient wss://Example.com/a?b=1 unconnected>"
    assert not client.closed


# TLS


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client that trusts it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.anyio
async def test_tls_round_trip(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_contexts
    with anyio.fail_after(LIMIT):
        async with (
            running(tls=server_ctx) as (_, url),
            WebSocketClient(url, ssl=client_ctx) as client,
        ):
            assert url.startswith("wss://")
            assert await client.invoke_tool("echo", {"message": "secret"}) == {"echoed": "secret"}
    assert client.close_code == 1000


@pytest.mark.anyio
async def test_tls_untrusted_certificate_is_refused(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = tls_contexts
    with anyio.fail_after(LIMIT):
        async with running(tls=server_ctx) as (_, url):
            with pytest.raises(ssl.SSLCertVerificationError):
                async with WebSocketClient(url):  # the system trust store: no test CA
                    pytest.fail("the certificate is not trusted")  # pragma: no cover


# Interop with an independent server


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # websockets' server is asyncio-only
async def test_interop_with_a_websockets_server(anyio_backend: str) -> None:
    from websockets.asyncio.server import ServerConnection as WSConnection
    from websockets.asyncio.server import serve

    async def handler(websocket: WSConnection) -> None:
        # The seed dialect as the original server spoke it.
        welcome = {"message": "Connected to seed", "tools": ["echo"]}
        await websocket.send(json.dumps({"id": "welcome", "result": welcome}))
        await websocket.send(json.dumps({"method": "hello", "params": {"from": "seed"}}))
        async for raw in websocket:
            message = json.loads(raw)
            answer: dict[str, Any] = {"id": message["id"]}
            if message["method"] == "list_tools":
                answer["result"] = {"tools": [{"name": "echo", "description": "Echo"}]}
            elif message["method"] == "ping":
                answer["result"] = {"pong": True}
            elif message["params"]["tool_name"] == "echo":
                answer["result"] = {"echoed": message["params"]["params"]["message"]}
            else:
                answer["error"] = {"code": -32601, "message": "Tool not found"}
            await websocket.send(json.dumps(answer))

    with anyio.fail_after(LIMIT):
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with WebSocketClient(f"ws://127.0.0.1:{port}") as client:
                tools = await client.list_tools()
                echoed = await client.invoke_tool("echo", {"message": "hi"})
                await client.ping()
                with pytest.raises(ToolNotFound):
                    await client.invoke_tool("missing")
                note = await client.notifications().__anext__()
                welcome = client.welcome
    assert tools == [{"name": "echo", "description": "Echo"}]
    assert echoed == {"echoed": "hi"}
    assert note == ("hello", {"from": "seed"})
    assert welcome is not None
    assert welcome.tools == ("echo",)
    assert client.close_code == 1000
