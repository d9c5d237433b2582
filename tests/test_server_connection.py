"""One anyio-path connection on scripted streams: failures a real socket rarely shows on cue."""

from __future__ import annotations

import logging

import anyio
import anyio.abc
import pytest

from securemcp import SecureMCP
from securemcp.backends._anyio_server import StreamConnection
from securemcp.backends._pubsub import LoopThread
from securemcp.backends._serving import _Server
from securemcp.backends._settings import ServerSettings
from securemcp.protocol import ClientConnection


class ScriptedStream(anyio.abc.ByteStream):
    """Gives ``incoming`` to the reader, then waits forever; ``send`` does as told."""

    def __init__(self, incoming: list[bytes], send_error: Exception | None = None) -> None:
        self.incoming = incoming
        self.send_error = send_error
        self.receive_error: Exception | None = None
        self.sent: list[bytes] = []
        self.closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self.receive_error is not None:
            raise self.receive_error
        if self.incoming:
            return self.incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, item: bytes) -> None:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append(item)

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed = True


def upgrade_request() -> bytes:
    client = ClientConnection()
    client.connect("localhost", "/")
    return client.data_to_send()


async def serve_one(stream: ScriptedStream, *, go_away_first: bool = False) -> None:
    """Serve ``stream`` as the only connection of a server, until it ends."""
    app = SecureMCP("scripted")
    settings = ServerSettings(
        app,
        limits=None,
        handshake_timeout=5.0,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=5.0,
        ssl=None,
    )
    server = _Server(settings, max_connections=10, loop=LoopThread.current())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            server._task_group = tg
            connection = StreamConnection(stream, server, refuse=False)
            if go_away_first:
                connection.driver.go_away()
                connection.driver.go_away()  # a second request changes nothing
            await connection.run()


@pytest.mark.anyio
async def test_a_failing_write_ends_the_connection_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = ScriptedStream([upgrade_request()], send_error=anyio.BrokenResourceError())
    await serve_one(stream)
    assert stream.closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.anyio
async def test_an_unexpected_error_is_logged_with_its_traceback_and_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = ScriptedStream([])
    stream.receive_error = RuntimeError("a bug in the stream")
    await serve_one(stream)
    assert stream.closed
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("unexpected error on the connection")
    assert record.exc_info is not None


@pytest.mark.anyio
async def test_go_away_before_the_connection_runs_closes_it_at_once() -> None:
    stream = ScriptedStream([upgrade_request()])
    await serve_one(stream, go_away_first=True)
    assert stream.closed
    assert stream.sent == []
