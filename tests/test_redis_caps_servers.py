"""RedisConnectionCounter behind servers: one cap across two of them, and pending decisions.

Two transports on two ports, each with its own counter, stand for two
machines. Slow decisions come from a subclass of the real counter that waits
before asking Redis. The counter alone: ``test_redis_caps.py``.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from securemcp import SecureMCP, SecurityPolicy
from securemcp.errors import HandshakeRejected
from securemcp.redis import RedisConnectionCounter
from securemcp.transport import WebSocketClient, WebSocketTransport

from .backend_server_helpers import read_until_closed
from .helpers import UPGRADE_REQUEST, client_frame, split_server_frames
from .redis_server import RedisServer
from .test_redis_caps import HASH, HERE, TIMEOUT, _counted, counter, eventually


class SlowCounter(RedisConnectionCounter):
    """The real counter, whose acquire waits ``delay`` seconds before asking Redis."""

    def __init__(self, *args: Any, delay: float = 0.0, **options: Any) -> None:
        super().__init__(*args, **options)
        self.delay = delay
        self.answers: list[bool] = []

    async def acquire(self, key: Any) -> bool:
        await anyio.sleep(self.delay)
        answer = await super().acquire(key)
        self.answers.append(answer)
        return answer


# Behind two servers


def echo_app() -> SecureMCP:
    app = SecureMCP("capped")

    @app.tool()
    async def echo(message: str) -> str:
        return message

    return app


@asynccontextmanager
async def servers(*counters: RedisConnectionCounter, **options: Any) -> AsyncIterator[list[str]]:
    """A transport ("machine") per counter, each on a port of its own; yields their URLs."""
    async with anyio.create_task_group() as tg:
        urls = []
        for shared in counters:
            transport = WebSocketTransport(
                echo_app(),
                security=SecurityPolicy(max_connections_per_address=shared),
                shutdown_grace=2.0,
                close_timeout=2.0,
                **options,
            )
            port = await tg.start(transport.serve, "127.0.0.1", 0)
            urls.append(f"ws://127.0.0.1:{port}/")
        yield urls
        tg.cancel_scope.cancel()


async def refused(url: str) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as refusal:
        async with WebSocketClient(url):
            pass
    return refusal.value


@pytest.mark.anyio
async def test_an_address_gets_its_cap_once_across_two_servers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.security")
    one, two = counter(redis_server), counter(redis_server)
    async with servers(one, two) as (url_a, url_b):
        with anyio.fail_after(TIMEOUT):
            async with WebSocketClient(url_b) as second, WebSocketClient(url_a):
                async with WebSocketClient(url_a):
                    for url in (url_a, url_b):
                        refusal = await refused(url)
                        assert refusal.status_code == 429
                        assert refusal.body == b"too many connections from this address\n"
                    assert await second.invoke_tool("echo", {"message": "still"}) == "still"
                # Closing one on A frees a slot, once A has seen the close (a task's release).
                await eventually(lambda: _counted(one, 2))
                async with WebSocketClient(url_b) as third:
                    assert await third.invoke_tool("echo", {"message": "b"}) == "b"
                    assert (await refused(url_a)).status_code == 429
    assert "refused: HTTP 429 too many connections from this address" in caplog.text
    # The servers gave every slot back before closing their counters.
    assert redis_server.command("KEYS", "{securemcp}:conns:*") == ""


@pytest.mark.anyio
async def test_without_redis_a_server_admits_by_its_own_count_promptly(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.redis")
    shared = counter(redis_server, 2, timeout=0.5, retry_interval=0.2)
    async with servers(shared) as (url,):
        with anyio.fail_after(TIMEOUT):
            redis_server.kill()
            started = time.monotonic()
            async with WebSocketClient(url), WebSocketClient(url):
                assert (await refused(url)).status_code == 429
            assert time.monotonic() - started < 3.0
    gc.collect()
    outages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outages) == 1, outages


# Pending decisions


def masked(message: Any) -> bytes:
    """``message`` as a client's text frame (masked)."""
    return client_frame(json.dumps(message).encode())


async def raw_upgrade(url: str, after: bytes = b"") -> anyio.abc.SocketStream:
    """Open a socket to ``url``'s server and send an upgrade request, then ``after``."""
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    stream = await anyio.connect_tcp("127.0.0.1", port)
    await stream.send(UPGRADE_REQUEST + after)
    return stream


@pytest.mark.anyio
async def test_a_request_pipelined_behind_the_handshake_is_answered_after_the_decision(
    redis_server: RedisServer,
) -> None:
    slow = SlowCounter(redis_server.url, 3, delay=0.3)
    async with servers(slow) as (url,):
        with anyio.fail_after(TIMEOUT):
            request = {"id": 7, "method": "invoke_tool",
                       "params": {"tool_name": "echo", "params": {"message": "early"}}}  # fmt: skip
            stream = await raw_upgrade(url, masked(request))
            async with stream:
                received = b""
                while received.count(b'"id":7') == 0:
                    received += await stream.receive()
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            frames = split_server_frames(body)
            assert frames[0][1].startswith(b'{"id":"welcome"')
            assert frames[1][1] == b'{"id":7,"result":"early"}'
            await eventually(lambda: slow.held(HERE) == 0)


@pytest.mark.anyio
async def test_a_handshake_timing_out_while_the_cap_is_decided_leaks_no_slot(
    redis_server: RedisServer,
) -> None:
    slow = SlowCounter(redis_server.url, 1, delay=0.8)
    async with servers(slow, handshake_timeout=0.2) as (url,):
        with anyio.fail_after(TIMEOUT):
            started = time.monotonic()
            async with await raw_upgrade(url) as stream:
                assert await read_until_closed(stream) == b""  # aborted: no answer
            assert time.monotonic() - started < 0.7
            # The decision came (a slot taken in Redis) for nobody: given back.
            await eventually(lambda: slow.answers == [True])
            await eventually(lambda: redis_server.command("HLEN", HASH) == "0")
            slow.delay = 0.0
            async with WebSocketClient(url) as client:
                assert await client.invoke_tool("echo", {"message": "free"}) == "free"


@pytest.mark.anyio
async def test_a_shutdown_while_the_cap_is_decided_closes_and_gives_the_slot_back(
    redis_server: RedisServer,
) -> None:
    slow = SlowCounter(redis_server.url, 1, delay=0.5)
    with anyio.fail_after(TIMEOUT):
        async with servers(slow) as (url,):
            stream = await raw_upgrade(url)
            await anyio.sleep(0.1)
        # The server has stopped: its counter is closed, after the slot went back.
        async with stream:
            assert await read_until_closed(stream) == b""
    assert slow.answers == [True]  # the slot was taken in Redis, for nobody...
    assert slow.held(HERE) == 0  # ...and given back before the counter closed
    assert redis_server.command("KEYS", "{securemcp}:conns:*") == ""


@pytest.mark.anyio
async def test_a_decision_arriving_while_the_server_drains_gets_503(
    redis_server: RedisServer,
) -> None:
    app = echo_app()
    started = anyio.Event()

    @app.tool()
    async def linger() -> str:
        started.set()
        await anyio.sleep(1.0)
        return "done"

    slow = SlowCounter(redis_server.url, 2)
    transport = WebSocketTransport(
        app, security=SecurityPolicy(max_connections_per_address=slow), shutdown_grace=3.0
    )
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            port = await tg.start(transport.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}/"
            answers: list[Any] = []

            async def call_linger() -> None:
                answers.append(await busy.invoke_tool("linger", {}))

            async with WebSocketClient(url) as busy:
                tg.start_soon(call_linger)
                await started.wait()
                slow.delay = 0.3
                stream = await raw_upgrade(url)
                await anyio.sleep(0.1)
                # Draining waits for linger; the decision arrives meanwhile.
                transport.shutdown()
                async with stream:
                    answer = await read_until_closed(stream)
                assert answer.startswith(b"HTTP/1.1 503 ")
                # The call in flight finished within the grace, as ever.
                await eventually(lambda: answers == ["done"])
    assert slow.answers == [True, True]
    assert redis_server.command("KEYS", "{securemcp}:conns:*") == ""
