"""The anyio server backend's shutdown, timers and peers that go away, on asyncio and trio.

Shutdown lets calls finish and closes 1001; a client dying mid-call; keepalive
pings closing a silent peer with 1011; the handshake timeout; requests that are
no upgrade, and upgrades past ``max_connections``. Over real loopback sockets,
with raw bytes where a misbehaving peer is needed.
"""

from __future__ import annotations

import logging
import socket
import struct

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from securemcp import SecureMCP
from securemcp.protocol import (
    ConnectionClosed,
    ConnectionRejected,
    ErrorReceived,
    Limits,
    ResponseReceived,
)

from .backend_server_helpers import (
    EARLY,
    TIMEOUT,
    RawClient,
    connect,
    demo_app,
    quick,
    read_until_closed,
    result_of,
)
from .helpers import serving

# Shutdown and peers that go away


@pytest.mark.anyio
async def test_shutdown_lets_calls_finish_cancels_the_rest_and_closes_1001() -> None:
    app = SecureMCP("shutdown")
    both_started = anyio.Event()
    running = 0
    release = anyio.Event()

    @app.tool()
    async def finishes() -> str:
        await _started()
        await release.wait()
        return "finished"

    @app.tool()
    async def never_finishes() -> str:
        await _started()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def _started() -> None:
        nonlocal running
        running += 1
        if running == 2:
            both_started.set()

    grace = 0.4
    transport = quick(app, shutdown_grace=grace)
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        async with connect(port) as client:
            with anyio.fail_after(TIMEOUT):
                done_id = client.conn.invoke_tool("finishes")
                stuck_id = client.conn.invoke_tool("never_finishes")
                await client.flush()
                await both_started.wait()
                stopping = anyio.current_time()
                transport.shutdown()
                release.set()
                assert await client.answer(done_id) == ResponseReceived(done_id, "finished")
                stuck = await client.answer(stuck_id)
                # Cancelled once the grace period is over, not before.
                waited = anyio.current_time() - stopping
                assert EARLY * grace <= waited < grace + 1.0, f"cancelled after {waited:.3f} s"
                assert isinstance(stuck, ErrorReceived)
                assert (stuck.code, stuck.message) == (-32800, "Server shutting down")
                closed = await client.closed()
                assert (closed.code, closed.reason) == (1001, "server shutting down")
        # serve() returns by itself after shutdown(): the task group ends.
    assert transport.open_connections == 0
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


@pytest.mark.anyio
async def test_cancelling_serve_drains_and_says_goodbye_with_1001() -> None:
    transport = quick(demo_app())
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        async with connect(port) as client:
            with anyio.fail_after(TIMEOUT):
                tg.cancel_scope.cancel()
                assert (await client.closed()).code == 1001


@pytest.mark.anyio
@pytest.mark.parametrize("reset", [False, True], ids=["eof", "reset"])
async def test_a_client_dying_mid_call_cancels_it_and_the_server_stays_healthy(
    reset: bool,
) -> None:
    app = SecureMCP("dying")
    started = anyio.Event()
    cancelled = anyio.Event()

    @app.tool()
    async def long_call() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    async with serving(quick(app)) as port:
        with anyio.fail_after(TIMEOUT):
            async with connect(port) as client:
                client.conn.invoke_tool("long_call")
                await client.flush()
                await started.wait()
                if reset:
                    # Linger 0: closing sends a TCP RST instead of a FIN.
                    raw = client.stream.extra(SocketAttribute.raw_socket)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # The socket is closed without a closing handshake.
            await cancelled.wait()
            async with connect(port) as fresh:
                assert result_of(await fresh.request("ping")) == {"pong": True}


@pytest.mark.anyio
async def test_keepalive_closes_a_silent_peer_with_1011() -> None:
    interval, pong_timeout, close_timeout = 0.2, 0.4, 0.6
    transport = quick(
        demo_app(), ping_interval=interval, ping_timeout=pong_timeout, close_timeout=close_timeout
    )
    async with serving(transport) as port:
        with anyio.fail_after(TIMEOUT):
            # Before connecting: the server's timers cannot start earlier.
            opened = anyio.current_time()
            async with connect(port) as client:
                # Read without answering anything (not even pings) until the server hangs up.
                closing: ConnectionClosed | None = None
                closing_at = 0.0
                while True:
                    try:
                        data = await client.stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    client.conn.receive_data(data)
                    for event in client.conn.events_received():
                        if isinstance(event, ConnectionClosed) and closing is None:
                            closing, closing_at = event, anyio.current_time()
                dropped_at = anyio.current_time()
    assert closing is not None, "the server hung up without a close frame"
    assert (closing.code, closing.reason) == (1011, "keepalive ping timeout")
    # The close frame comes once a ping went unanswered for ping_timeout...
    waited = closing_at - opened
    assert waited >= EARLY * (interval + pong_timeout), f"closed after {waited:.3f} s"
    # ...and the connection is dropped once the silent peer let close_timeout
    # pass (timed from the close frame's arrival, a little after the timer started).
    lingered = dropped_at - closing_at
    assert EARLY * close_timeout <= lingered < close_timeout + 1.0, (
        f"dropped {lingered:.3f} s after the close frame"
    )


@pytest.mark.anyio
async def test_keepalive_spares_a_peer_that_answers_pings() -> None:
    app = SecureMCP("keepalive")

    @app.tool()
    async def nap() -> str:
        # Several ping intervals and pong deadlines pass during the call.
        await anyio.sleep(0.5)
        return "awake"

    transport = quick(app, ping_interval=0.05, ping_timeout=0.1)
    async with serving(transport) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            assert result_of(await client.invoke("nap")) == "awake"
            assert result_of(await client.request("ping")) == {"pong": True}


@pytest.mark.anyio
async def test_keepalive_waits_for_pongs_it_cannot_read_while_paused() -> None:
    app = SecureMCP("paused")

    @app.tool()
    async def nap() -> str:
        # Longer than a ping interval plus a pong deadline, at max_in_flight.
        await anyio.sleep(0.5)
        return "awake"

    transport = quick(app, limits=Limits(max_in_flight=1), ping_interval=0.05, ping_timeout=0.1)
    async with serving(transport) as port, connect(port) as client:
        with anyio.fail_after(TIMEOUT):
            first = client.conn.invoke_tool("nap")
            second = client.conn.invoke_tool("nap")
            await client.flush()
            assert await client.answer(first) == ResponseReceived(first, "awake")
            assert await client.answer(second) == ResponseReceived(second, "awake")


async def still_open_and_silent(stream: anyio.abc.ByteStream, seconds: float) -> None:
    """Nothing arrives on ``stream`` for ``seconds``, and the server does not close it."""
    with anyio.move_on_after(seconds):
        try:
            data = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pytest.fail("the server closed a connection still in its handshake")
        pytest.fail(f"the server sent {data!r} to a connection still in its handshake")


@pytest.mark.anyio
async def test_handshake_timeout_closes_a_half_sent_request() -> None:
    timeout = 0.5
    transport = quick(demo_app(), handshake_timeout=timeout)
    async with serving(transport) as port:
        with anyio.fail_after(TIMEOUT):
            # Before connecting: the server's timer cannot start earlier.
            opened = anyio.current_time()
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
                # Dropped without a byte of answer (no HTTP status), at the
                # timeout: not before, and not long after.
                assert await read_until_closed(stream) == b""
                lived = anyio.current_time() - opened
            assert EARLY * timeout <= lived < timeout + 1.0, f"closed after {lived:.3f} s"
            async with connect(port) as client:
                assert result_of(await client.request("ping")) == {"pong": True}


@pytest.mark.anyio
async def test_shutdown_drops_a_connection_still_in_its_handshake() -> None:
    transport = quick(demo_app(), handshake_timeout=None)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            port = await tg.start(transport.serve, "127.0.0.1", 0)
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\n")
                # A ping on another connection proves the first one was accepted.
                async with connect(port) as client:
                    assert result_of(await client.request("ping")) == {"pong": True}
                # Without a handshake timeout the server waits, silent...
                await still_open_and_silent(stream, 0.3)
                stopping = anyio.current_time()
                transport.shutdown()
                # ...until it shuts down: then the connection is dropped
                # without a byte of answer, at once (no grace for handshakes).
                assert await read_until_closed(stream) == b""
                assert anyio.current_time() - stopping < 1.0


@pytest.mark.anyio
async def test_a_request_that_is_not_an_upgrade_gets_400() -> None:
    async with serving(quick(demo_app())) as port:
        with anyio.fail_after(TIMEOUT):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.anyio
async def test_past_max_connections_the_upgrade_is_refused_with_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="securemcp.security")
    async with serving(quick(demo_app(), max_connections=1)) as port, connect(port) as first:
        with anyio.fail_after(TIMEOUT):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                second = RawClient(stream)
                second.conn.connect("localhost", "/")
                await second.flush()
                rejected = await second.next_event()
            assert isinstance(rejected, ConnectionRejected)
            assert rejected.status_code == 503
            assert result_of(await first.request("ping")) == {"pong": True}
    assert "refused with 503: max_connections reached" in caplog.text
