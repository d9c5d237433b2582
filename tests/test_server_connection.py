"""One server connection on scripted streams: the failures a real socket rarely shows on cue."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
import pytest

from securemcp import SecureMCP
from securemcp.backends._connection import ServerSettings, ServerSideConnection
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


def connection(stream: ScriptedStream, **settings: Any) -> ServerSideConnection:
    app = SecureMCP("scripted")
    options: dict[str, Any] = {
        "limits": None,
        "handshake_timeout": 5.0,
        "ping_interval": None,
        "ping_timeout": None,
        "close_timeout": 5.0,
        "ssl": None,
        **settings,
    }
    return ServerSideConnection(
        stream, ServerSettings(app, **options), limiter=anyio.CapacityLimiter(1)
    )


@pytest.mark.anyio
async def test_a_failing_write_ends_the_connection_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = ScriptedStream([upgrade_request()], send_error=anyio.BrokenResourceError())
    with anyio.fail_after(5):
        await connection(stream).run()
    assert stream.closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.anyio
async def test_an_unexpected_error_is_logged_with_its_traceback_and_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = ScriptedStream([])
    stream.receive_error = RuntimeError("a bug in the stream")
    with anyio.fail_after(5):
        await connection(stream).run()
    assert stream.closed
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("unexpected error on the connection")
    assert record.exc_info is not None


@pytest.mark.anyio
async def test_go_away_before_the_connection_runs_closes_it_at_once() -> None:
    stream = ScriptedStream([upgrade_request()])
    conn = connection(stream)
    conn.go_away()
    conn.go_away()  # a second request changes nothing
    with anyio.fail_after(5):
        await conn.run()
    assert stream.closed
    assert stream.sent == []
