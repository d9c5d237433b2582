"""Broadcast: the broker, frames encoded once, and live delivery (in memory, and over sockets)."""

from __future__ import annotations

import gc
import json
import secrets
import socket
import tracemalloc
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from securemcp import Context, LocalProtocolError, SecureMCP
from securemcp.backends._pubsub import ConnectionSession, LoopThread
from securemcp.protocol import Limits, ServerConnection, encode_notification, text_frame
from securemcp.pubsub import Broker, LocalBroker, Notification, Subscriber, check_topic
from securemcp.testing import TestClient
from securemcp.transport import WebSocketClient, WebSocketTransport

from .helpers import (
    UPGRADE_REQUEST,
    open_server,
    parse_server_messages,
    serving,
    split_server_frames,
)

WAIT = 10.0
"""Upper bound of every wait: a failure ends the test instead of hanging it."""


# The broker alone


class Inbox:
    """A subscriber that records what it is given; ``accept`` says whether it takes it."""

    def __init__(self, accept: bool = True) -> None:
        self.received: list[Notification] = []
        self.accept = accept

    def deliver(self, notification: Notification) -> bool:
        self.received.append(notification)
        return self.accept


def test_local_broker_delivers_to_the_topic_subscribers_only() -> None:
    broker = LocalBroker()
    ann, bob, cyd = Inbox(), Inbox(), Inbox()
    broker.subscribe("room:a", ann)
    broker.subscribe("room:a", bob)
    broker.subscribe("room:a", bob)  # twice: still one subscription
    broker.subscribe("room:b", cyd)
    assert isinstance(broker, Broker)
    assert isinstance(ann, Subscriber)

    assert broker.publish("room:a", "chat.message", {"text": "hi"}) == 2
    assert [n.params for n in ann.received] == [{"text": "hi"}]
    assert [n.method for n in bob.received] == ["chat.message"]
    assert cyd.received == []
    # One notification object, so its frame is encoded once for everybody.
    assert ann.received[0] is bob.received[0]
    assert broker.publish("room:nobody", "x") == 0
    assert broker.topics() == ["room:a", "room:b"]
    assert broker.subscriber_count("room:a") == 2
    assert broker.subscriptions(bob) == ["room:a"]


def test_unsubscribing_forgets_empty_topics() -> None:
    broker = LocalBroker()
    ann, bob = Inbox(), Inbox()
    broker.subscribe("t1", ann)
    broker.subscribe("t2", ann)
    broker.subscribe("t1", bob)
    assert broker.unsubscribe("t1", ann) is True
    assert broker.unsubscribe("t1", ann) is False
    assert broker.unsubscribe("never", ann) is False
    broker.unsubscribe_all(ann)
    assert broker.topics() == ["t1"]
    assert broker.subscriptions(ann) == []
    broker.unsubscribe_all(bob)
    assert broker.topics() == []
    assert broker.subscriber_count("t1") == 0


def test_refusing_subscribers_are_not_counted_and_may_leave_during_publish() -> None:
    broker = LocalBroker()
    full = Inbox(accept=False)

    class Leaver(Inbox):
        def deliver(self, notification: Notification) -> bool:
            broker.unsubscribe_all(self)
            return False

    leaver = Leaver()
    ok = Inbox()
    for subscriber in (full, leaver, ok):
        broker.subscribe("t", subscriber)
    assert broker.publish("t", "m") == 1
    assert len(ok.received) == 1
    assert broker.subscriber_count("t") == 2


@pytest.mark.parametrize("topic", ["", "x" * 257, 5])
def test_bad_topics_are_refused(topic: Any) -> None:
    with pytest.raises(ValueError, match="topic"):
        LocalBroker().subscribe(topic, Inbox())
    with pytest.raises(ValueError, match="topic"):
        check_topic(topic)


def test_a_notification_needs_a_method() -> None:
    with pytest.raises(ValueError, match="method"):
        Notification("")
    assert repr(Notification("m")) == "Notification('m')"


# Frames encoded once


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frame_is_what_wsproto_reads(size: int) -> None:
    payload = json.dumps({"method": "m", "params": "x" * size}).encode()
    frames = split_server_frames(text_frame(payload))
    assert frames == [(0x1, payload)]


def test_encode_notification_in_both_dialects() -> None:
    seed = parse_server_messages(encode_notification("chat.message", {"id": 1}))
    assert seed == [{"method": "chat.message", "params": {"id": 1}}]
    mcp = parse_server_messages(encode_notification("ping.me", jsonrpc_2=True))
    assert mcp == [{"jsonrpc": "2.0", "method": "ping.me"}]
    note = Notification("m", [1])
    assert note.frame() is note.frame()
    assert note.frame(jsonrpc_2=True) != note.frame()


def test_send_frame_queues_the_bytes_only_while_open() -> None:
    app = SecureMCP("t")
    fresh = ServerConnection(app)
    with pytest.raises(LocalProtocolError):
        fresh.send_frame(b"x")
    conn = open_server(app)
    frame = encode_notification("m", {"a": 1})
    assert conn.send_frame(frame) is True
    assert conn.pending_output == len(frame)
    assert conn.data_to_send() == frame
    conn.close()
    assert conn.send_frame(frame) is False


def test_send_frame_refuses_a_compressed_connection() -> None:
    conn = ServerConnection(SecureMCP("t"), limits=Limits(permessage_deflate=True))
    conn.receive_data(
        UPGRADE_REQUEST.replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
    )
    conn.events_received()
    conn.accept()
    assert conn.compressed
    with pytest.raises(LocalProtocolError, match="compressed"):
        conn.send_frame(b"x")


def test_a_context_without_a_session_says_so() -> None:
    ctx = Context(None, 1, "t")
    assert ctx.subscriptions == frozenset()
    for attempt in (
        lambda: ctx.subscribe("t"),
        lambda: ctx.unsubscribe("t"),
        lambda: ctx.publish("t", "m"),
        lambda: ctx.subscriber_count("t"),
        ctx.topics,
    ):
        with pytest.raises(RuntimeError, match="no broadcast session"):
            attempt()


# Over real sockets


def broadcast_app() -> SecureMCP:
    """Tools that join, leave and publish through their Context (async and sync)."""
    app = SecureMCP("pubsub")

    @app.tool()
    async def join(topic: str, ctx: Context) -> int:
        ctx.subscribe(topic)
        return ctx.subscriber_count(topic)

    @app.tool()
    def join_sync(topic: str, ctx: Context) -> list[str]:
        # A worker thread: every call hops to the event loop.
        ctx.subscribe(topic)
        return sorted(ctx.subscriptions)

    @app.tool()
    async def leave(topic: str, ctx: Context) -> bool:
        return ctx.unsubscribe(topic)

    @app.tool()
    async def say(topic: str, text: str, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"topic": topic, "text": text})

    @app.tool()
    def say_sync(topic: str, text: str, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"topic": topic, "text": text})

    @app.tool()
    async def say_big(topic: str, size: int, ctx: Context) -> int:
        return ctx.publish(topic, "said", {"topic": topic, "text": "x" * size})

    @app.tool()
    def topics(ctx: Context) -> list[str]:
        return ctx.topics()

    return app


async def next_note(client: WebSocketClient) -> tuple[str, Any]:
    with anyio.fail_after(WAIT):
        async for method, params in client.notifications():
            return method, params
    raise AssertionError("the connection ended before a notification came")


@pytest.mark.anyio
async def test_three_clients_receive_what_their_room_publishes() -> None:
    transport = WebSocketTransport(broadcast_app())
    async with (
        TestClient(transport) as ann,
        TestClient(transport) as bob,
        TestClient(transport) as cyd,
    ):
        assert await ann.invoke_tool("join", {"topic": "room:a"}) == 1
        assert await bob.invoke_tool("join_sync", {"topic": "room:a"}) == ["room:a"]
        assert await cyd.invoke_tool("join", {"topic": "room:b"}) == 1
        assert sorted(await cyd.invoke_tool("topics")) == ["room:a", "room:b"]

        # The sender (a member) hears itself too; cyd, elsewhere, hears nothing.
        assert await ann.invoke_tool("say", {"topic": "room:a", "text": "one"}) == 2
        assert await cyd.invoke_tool("say_sync", {"topic": "room:a", "text": "two"}) == 2
        for member in (ann, bob):
            assert await next_note(member) == ("said", {"topic": "room:a", "text": "one"})
            assert await next_note(member) == ("said", {"topic": "room:a", "text": "two"})
        assert await bob.invoke_tool("say", {"topic": "room:b", "text": "three"}) == 1
        assert await next_note(cyd) == ("said", {"topic": "room:b", "text": "three"})

        assert await bob.invoke_tool("leave", {"topic": "room:a"}) is True
        assert await bob.invoke_tool("leave", {"topic": "room:a"}) is False
        assert await cyd.invoke_tool("say", {"topic": "room:a", "text": "four"}) == 1
        assert await next_note(ann) == ("said", {"topic": "room:a", "text": "four"})
    # Each connection left every topic as it ended.
    assert transport.broker.topics() == []


@pytest.mark.anyio
async def test_an_mcp_client_gets_jsonrpc_notifications() -> None:
    app = broadcast_app()
    async with TestClient(app, mcp=True) as mcp, TestClient(app) as seed:
        await mcp.invoke_tool("join", {"topic": "t"})
        await seed.invoke_tool("join", {"topic": "t"})
        assert await seed.invoke_tool("say", {"topic": "t", "text": "x"}) == 2
        assert await next_note(mcp) == ("said", {"topic": "t", "text": "x"})
        assert await next_note(seed) == ("said", {"topic": "t", "text": "x"})


@pytest.mark.anyio
async def test_a_compressed_connection_encodes_its_own_frames() -> None:
    limits = Limits(permessage_deflate=True)
    transport = WebSocketTransport(
        broadcast_app(), limits=limits, shutdown_grace=1, close_timeout=2
    )
    async with serving(transport) as port:
        url = f"ws://127.0.0.1:{port}"
        async with WebSocketClient(url, limits=limits) as client:
            await client.invoke_tool("join", {"topic": "t"})
            assert await client.invoke_tool("say", {"topic": "t", "text": "z" * 500}) == 1
            assert await next_note(client) == ("said", {"topic": "t", "text": "z" * 500})


class SlowReader:
    """A raw client that joins a topic and then stops reading (tiny receive buffer)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="localhost", target="/")))
        self.messages: list[Any] = []
        self.close_code: int | None = None
        self.accepted = False
        self._text = ""
        while not self.accepted:
            self._pump()

    def _pump(self) -> None:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                # wsproto hands over large messages in pieces.
                self._text += event.data
                if event.message_finished:
                    self.messages.append(json.loads(self._text))
                    self._text = ""
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
            else:
                assert isinstance(event, AcceptConnection)
                self.accepted = True
        if not data:
            raise EOFError

    def call(self, tool: str, **params: Any) -> Any:
        request = {
            "id": tool,
            "method": "invoke_tool",
            "params": {"tool_name": tool, "params": params},
        }
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(request))))
        while not any(m.get("id") == tool for m in self.messages):
            self._pump()
        return next(m for m in self.messages if m.get("id") == tool)["result"]

    def read_to_the_end(self) -> None:
        try:
            while self.close_code is None:
                self._pump()
        except (EOFError, OSError):
            pass
        self.sock.close()


@pytest.mark.anyio
async def test_a_client_that_does_not_read_is_dropped_with_1013_and_the_others_keep_up() -> None:
    limits = Limits(max_pending_output=256 * 1024)
    transport = WebSocketTransport(
        broadcast_app(), limits=limits, shutdown_grace=1, close_timeout=WAIT
    )
    size = 64 * 1024
    # 12.5 MiB for each subscriber: far past the 256 KiB bound and the socket
    # buffers (Linux lets a send buffer grow to 4 MiB).
    rounds = 200
    async with serving(transport) as port, AsyncExitStack() as stack:
        slow = await anyio.to_thread.run_sync(SlowReader, port)
        stack.callback(slow.sock.close)
        assert await anyio.to_thread.run_sync(lambda: slow.call("join", topic="t")) == 1
        url = f"ws://127.0.0.1:{port}"
        received = 0
        async with WebSocketClient(url, max_queued_notifications=rounds + 10) as fast:
            await fast.invoke_tool("join", {"topic": "t"})
            gc.collect()
            tracemalloc.start()
            try:
                with anyio.fail_after(WAIT * 3):
                    async with anyio.create_task_group() as tg:

                        async def count() -> None:
                            nonlocal received
                            async for _ in fast.notifications():
                                received += 1
                                if received == rounds:
                                    return

                        tg.start_soon(count)
                        for _ in range(rounds):
                            await fast.invoke_tool("say_big", {"topic": "t", "size": size})
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            # The fast client got everything, while the slow one was cut off.
            assert received == rounds
            assert transport.broker.subscriber_count("t") == 1
        # The server never held the slow one's share (~8 MiB past the socket buffers).
        assert peak < 3_000_000, peak
        await anyio.to_thread.run_sync(slow.read_to_the_end)
        assert slow.close_code == 1013
        assert len(slow.messages) < rounds


# One connection's session, on a core without sockets


@pytest.mark.anyio
@pytest.mark.parametrize("compressed", [False, True])
async def test_a_session_closes_its_connection_with_1013_past_the_backlog(
    compressed: bool,
) -> None:
    limits = Limits(max_pending_output=1024, permessage_deflate=compressed)
    conn = ServerConnection(SecureMCP("t"), limits=limits)
    offer = (
        b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n" if compressed else b"\r\n\r\n"
    )
    conn.receive_data(UPGRADE_REQUEST.replace(b"\r\n\r\n", offer))
    conn.events_received()
    conn.accept()
    conn.data_to_send()
    assert conn.compressed is compressed
    broker = LocalBroker()
    wakes: list[None] = []
    session = ConnectionSession(
        conn,
        broker,
        wake=lambda: wakes.append(None),
        handle_events=lambda: None,
        pending=lambda: conn.pending_output,
        loop=LoopThread.current(),
    )
    session.subscribe("t")
    assert session.subscriptions == frozenset({"t"})
    assert session.topics() == ["t"]
    # Nothing unsent yet: even a message larger than the bound goes out.
    # (random text: compression cannot shrink it under the bound)
    assert session.publish("t", "m", secrets.token_hex(2000)) == 1
    assert wakes
    assert session.publish("t", "m", "y") == 0
    assert session.dropped
    assert broker.topics() == []
    frames = split_server_frames(conn.data_to_send()) if not compressed else []
    if not compressed:
        assert frames[-1][0] == 0x8  # the close frame
        assert int.from_bytes(frames[-1][1][:2], "big") == 1013
    # Closing: nothing more is queued, and no subscription is taken.
    assert session.deliver(Notification("m")) is False
    session.subscribe("t")
    assert broker.topics() == []
