"""The test kit's in-memory connections behave as the sockets they stand for."""

from __future__ import annotations

import asyncio
import contextvars

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute

from securemcp.backends._memory import (
    _STREAM_CHUNKS,
    READ_SIZE,
    MemoryTransport,
    memory_stream_pair,
    memory_transport_pair,
)

CLIENT = ("testclient", 50000)
SERVER = ("testserver", 80)


class Recorder(asyncio.Protocol):
    """Writes down every callback a transport makes."""

    def __init__(self, keep_open: bool = False) -> None:
        self.keep_open = keep_open
        self.transport: MemoryTransport | None = None
        self.events: list[tuple[str, object]] = []
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, MemoryTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> bool:
        self.events.append(("eof", None))
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc)))
        self.lost.set()

    def pause_writing(self) -> None:
        self.events.append(("pause", None))

    def resume_writing(self) -> None:
        self.events.append(("resume", None))

    @property
    def received(self) -> bytes:
        return b"".join(data for kind, data in self.events if kind == "data")  # type: ignore[misc]

    @property
    def end(self) -> MemoryTransport:
        assert self.transport is not None
        return self.transport


def pair(
    *, client_keeps_open: bool = False, server_keeps_open: bool = False
) -> tuple[Recorder, Recorder]:
    client, server = Recorder(client_keeps_open), Recorder(server_keeps_open)
    memory_transport_pair(
        client,
        server,
        client_context=contextvars.copy_context(),
        server_context=contextvars.copy_context(),
        client_address=CLIENT,
        server_address=SERVER,
    )
    return client, server


async def turns(count: int = 10) -> None:
    """Let the event loop run its callbacks a few times."""
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_bytes_arrive_later_in_order_and_in_socket_sized_reads() -> None:
    client, server = pair()
    assert server.end.get_extra_info("peername") == CLIENT
    assert client.end.get_extra_info("peername") == SERVER
    payload = bytes(range(256)) * 600  # 153,600 bytes
    client.end.write(payload[:1000])
    client.end.write(payload[1000:])
    assert server.events == []  # never inside the writer's own call
    await turns()
    sizes = [len(data) for kind, data in server.events if kind == "data"]  # type: ignore[arg-type]
    assert sizes == [READ_SIZE, READ_SIZE, len(payload) - 2 * READ_SIZE]
    assert server.received == payload
    client.end.write(b"")  # nothing to send: nothing happens
    await turns()
    assert len(server.events) == 3


@pytest.mark.anyio
async def test_a_peer_that_stops_reading_pauses_the_writer_until_it_reads_again() -> None:
    client, server = pair()
    client.end.set_write_buffer_limits(high=1000)
    assert client.end.get_write_buffer_limits() == (250, 1000)
    server.end.pause_reading()
    server.end.resume_reading()  # nothing to read yet
    await turns()
    client.end.write(b"x" * 600)
    server.end.pause_reading()  # before the bytes were handed over
    client.end.write(b"x" * 600)
    await turns()
    assert client.events == [("pause", None)]
    assert client.end.get_write_buffer_size() == 1200
    assert server.events == []
    server.end.resume_reading()
    server.end.resume_reading()  # already reading: no effect
    await turns()
    assert server.received == b"x" * 1200
    assert client.events == [("pause", None), ("resume", None)]
    assert client.end.get_write_buffer_size() == 0


@pytest.mark.anyio
async def test_write_buffer_limits_follow_asyncios_rules() -> None:
    end = MemoryTransport(asyncio.get_running_loop(), Recorder(), contextvars.copy_context(), {})
    end.set_write_buffer_limits(low=100)
    assert end.get_write_buffer_limits() == (100, 400)
    end.set_write_buffer_limits()
    assert end.get_write_buffer_limits() == (16384, 65536)
    with pytest.raises(ValueError, match="must be >="):
        end.set_write_buffer_limits(high=10, low=20)


@pytest.mark.anyio
async def test_close_delivers_the_last_bytes_then_the_end_of_the_stream() -> None:
    client, server = pair()
    client.end.write(b"last words")
    client.end.close()
    client.end.close()  # twice: no effect
    assert client.end.is_closing()
    client.end.write(b"too late")  # dropped
    await turns()
    assert server.events == [("data", b"last words"), ("eof", None), ("lost", type(None))]
    assert client.events == [("lost", type(None))]
    server.end.write(b"to nobody")  # the peer is gone: dropped
    await turns()
    assert client.events == [("lost", type(None))]


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ["close", "abort"])
async def test_a_peer_that_keeps_its_end_open_after_eof_ends_it_itself(ending: str) -> None:
    client, server = pair(server_keeps_open=True)
    client.end.close()
    await turns()
    assert server.events == [("eof", None)]
    getattr(server.end, ending)()
    await turns()
    assert server.events == [("eof", None), ("lost", type(None))]


@pytest.mark.anyio
async def test_closing_drops_what_was_not_read_and_frees_the_writer() -> None:
    client, server = pair()
    server.end.pause_reading()
    client.end.write(b"unread")
    server.end.close()  # as a socket closed with unread data
    await turns()
    assert server.events == [("lost", type(None))]
    assert client.end.get_write_buffer_size() == 0
    # The end of the stream reached the client: it closed its end too.
    assert client.events == [("eof", None), ("lost", type(None))]


@pytest.mark.anyio
async def test_both_ends_closing_at_once_end_quietly() -> None:
    client, server = pair()
    client.end.close()
    server.end.close()
    await turns()
    assert client.events == [("lost", type(None))]
    assert server.events == [("lost", type(None))]


@pytest.mark.anyio
async def test_abort_is_a_reset_for_the_peer() -> None:
    client, server = pair()
    client.end.write(b"never sent")
    client.end.abort()
    client.end.abort()  # twice: no effect
    server.end.abort()  # already reset: no effect
    await turns()
    assert server.events == [("lost", ConnectionResetError)]
    assert client.events == [("lost", type(None))]


@pytest.mark.anyio
async def test_the_stream_pair_splits_reads_reports_the_peer_and_ends() -> None:
    client, server = memory_stream_pair(CLIENT, SERVER)
    async with client, server:
        assert server.extra(SocketAttribute.remote_address) == CLIENT
        assert client.extra(SocketAttribute.remote_address) == SERVER
        await client.send(b"abcdef")
        assert await server.receive(4) == b"abcd"
        assert await server.receive(4) == b"ef"
        await server.send(b"reply")
        assert await client.receive() == b"reply"
        await client.send_eof()
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        await client.aclose()
        with pytest.raises(anyio.BrokenResourceError):
            await server.send(b"to nobody")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_stream_pair_holds_a_few_writes_then_makes_the_writer_wait() -> None:
    client, server = memory_stream_pair(CLIENT, SERVER)
    async with client, server:
        sent = 0
        with anyio.move_on_after(0.2):
            while True:
                await client.send(b"x")
                sent += 1
        assert sent == _STREAM_CHUNKS  # bounded, as a socket buffer is
        assert await server.receive() == b"x"
