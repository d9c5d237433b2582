"""Broadcast without sockets: the broker, frames encoded once, and one connection's session.

Delivery to live clients over sockets is in ``test_pubsub_delivery.py``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from securemcp import Context, LocalProtocolError, SecureMCP
from securemcp.backends._pubsub import ConnectionSession, LoopThread
from securemcp.protocol import Limits, ServerConnection, encode_notification, text_frame
from securemcp.pubsub import Broker, LocalBroker, Notification, Subscriber, check_topic

from .helpers import (
    UPGRADE_REQUEST,
    open_server,
    parse_server_messages,
    split_server_frames,
)

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
