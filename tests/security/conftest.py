"""The harness of the hostile-input suite: a real server, hostile raw peers, and a probe.

Every case runs inside :func:`hostile_server`: a :class:`WebSocketTransport` on
127.0.0.1 port 0 with a *bystander* client connected before the attack. When
the case is over, the bystander must still be answered and a *fresh* client
must connect and get correct ``ping`` and ``invoke_tool`` answers within
:data:`PROBE_TIMEOUT`: an attack on one connection disturbs nobody else.

:class:`RawPeer` is the attacker: raw bytes over an anyio stream, so it can send
what no well-behaved client would (half a handshake, bad frames, floods).
"""

from __future__ import annotations

import os
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute

from securemcp import Principal, Progress, SecureMCP, SecurityPolicy, StaticTokenAuthenticator
from securemcp.protocol import Limits
from securemcp.transport import WebSocketClient, WebSocketTransport

from ..helpers import OP_CLOSE, UPGRADE_REQUEST, client_frame, close_payload

CASE_TIMEOUT = 15.0
"""Bound of one case's network activity; cases finish far sooner."""
PROBE_TIMEOUT = 5.0
"""How promptly the bystander and a fresh client must be served after an attack."""

ADMIN_TOKEN = "admin-token-3b8e51f0c2"
USER_TOKEN = "user-token-9d2c47a1e6"


class ToolLog:
    """What the hostile app's tools saw: starts and cancellations of ``hold``."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = anyio.Event()
        self.admin_calls = 0
        self.echoes = 0
        self.reports: list[bool] = []
        """What each ``chatter`` report returned: whether it went out."""


def hostile_app(log: ToolLog) -> SecureMCP:
    """An echo, large answers, progress galore, a call that never ends and an admin-only tool."""
    app = SecureMCP("hostile")

    @app.tool()
    async def echo(message: str) -> str:
        log.echoes += 1
        return message

    @app.tool()
    async def blob(size: int) -> str:
        """An answer much larger than its request."""
        return "x" * size

    @app.tool()
    async def blob_later(size: int) -> str:
        """The same answer after suspending once: a task of the call's own writes it."""
        await anyio.lowlevel.checkpoint()
        return "x" * size

    @app.tool()
    async def chatter(count: int, size: int, progress: Progress) -> str:
        """``count`` progress reports of ``size`` characters each, then a short answer."""
        text = "p" * size
        for step in range(1, count + 1):
            log.reports.append(progress.report(step, count, text))
            await anyio.lowlevel.checkpoint()
        return f"reported {count}"

    @app.tool()
    async def hold() -> None:
        log.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            log.cancelled.set()
            raise

    @app.tool(scopes={"admin"})
    def purge() -> str:
        log.admin_calls += 1
        return "purged"

    return app


def token_policy(**options: Any) -> SecurityPolicy:
    """Alice (admin) and Bob (no scope) by static token."""
    authenticator = StaticTokenAuthenticator(
        {ADMIN_TOKEN: Principal("alice", frozenset({"admin"})), USER_TOKEN: Principal("bob")}
    )
    return SecurityPolicy(authenticator=authenticator, **options)


@dataclass
class Server:
    """A running hostile-suite server."""

    transport: WebSocketTransport
    port: int
    log: ToolLog
    client_options: dict[str, Any]
    """What a legitimate client needs to connect (a token, say)."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def peer(
        self, request: bytes = UPGRADE_REQUEST, *, rcvbuf: int = 0, mss: int = 0
    ) -> RawPeer:
        """A raw connection that has sent ``request`` (nothing if empty).

        A non-zero ``rcvbuf`` caps the peer's socket receive buffer, so that a
        peer that does not read fills up after a few kilobytes (the kernel
        would otherwise grow the buffer to megabytes, swallowing a flood).

        A non-zero ``mss`` is the largest TCP segment the peer announces it
        takes (where the platform lets a client say so). Linux sizes a
        sender's socket buffer in segments, so the server's send buffer
        towards this peer stays at some hundred kilobytes instead of growing
        to megabytes: a peer that does not read pushes back sooner.
        """
        if mss and hasattr(socket, "TCP_MAXSEG"):
            stream = await self._connect_with_mss(mss)
        else:
            stream = await anyio.connect_tcp("127.0.0.1", self.port)
        if rcvbuf:
            raw = stream.extra(SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        peer = RawPeer(stream)
        if request:
            await stream.send(request)
        return peer

    async def _connect_with_mss(self, mss: int) -> anyio.abc.SocketStream:
        # The segment size is announced in the SYN: set before connecting.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                await anyio.wait_writable(sock)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, os.strerror(error)) from None
        except BaseException:
            sock.close()
            raise
        return await anyio.abc.SocketStream.from_socket(sock)

    @asynccontextmanager
    async def open_peer(
        self, request: bytes = UPGRADE_REQUEST, *, rcvbuf: int = 0, mss: int = 0
    ) -> AsyncIterator[RawPeer]:
        """A raw connection past the 101 (and the welcome, read and checked)."""
        peer = await self.peer(request, rcvbuf=rcvbuf, mss=mss)
        async with peer.stream:
            head = await peer.response_head()
            assert head.startswith(b"HTTP/1.1 101 "), head
            welcome = await peer.next_frame()
            assert welcome[0] == 0x1
            assert b'"id":"welcome"' in welcome[1]
            yield peer


async def probe(server: Server, client: WebSocketClient | None = None) -> None:
    """A client (a fresh one by default) gets correct answers, promptly."""
    with anyio.fail_after(PROBE_TIMEOUT):
        if client is None:
            async with WebSocketClient(server.url, **server.client_options) as fresh:
                await _check_served(fresh)
        else:
            await _check_served(client)


async def _check_served(client: WebSocketClient) -> None:
    await client.ping()
    assert await client.invoke_tool("echo", {"message": "still here"}) == "still here"


@asynccontextmanager
async def hostile_server(
    *,
    limits: Limits | None = None,
    security: SecurityPolicy | None = None,
    client_options: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Server]:
    """Serve the hostile app for the block; then prove nobody else was disturbed."""
    options.setdefault("shutdown_grace", 1.0)
    options.setdefault("close_timeout", 2.0)
    log = ToolLog()
    transport = WebSocketTransport(hostile_app(log), limits=limits, security=security, **options)
    client_options = {} if client_options is None else client_options
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0)
        server = Server(transport, port, log, client_options)
        async with WebSocketClient(server.url, **client_options) as bystander:
            await probe(server, bystander)
            with anyio.fail_after(CASE_TIMEOUT):
                yield server
            await probe(server, bystander)
            await probe(server)
        tg.cancel_scope.cancel()


# The raw attacker


class RawPeer:
    """Raw bytes to the server; server frames parsed back (they are never masked)."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self.eof = False

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            self._buffer += await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            self.eof = True
            return False
        return True

    async def response_head(self) -> bytes:
        """The HTTP head the server answered the handshake with (empty on EOF)."""
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if not await self._fill():
                return b""
        head = bytes(self._buffer[: end + 4])
        del self._buffer[: end + 4]
        return head

    async def http_answer(self) -> tuple[int, bytes]:
        """The status and body of a refusal (the server closes after it)."""
        head = await self.response_head()
        assert head, "the server closed without answering"
        status = int(head.split(b" ", 2)[1])
        while await self._fill():
            pass
        return status, bytes(self._buffer)

    async def receive_exactly(self, size: int) -> bytes:
        """The server's next ``size`` bytes (fewer only if it closes first)."""
        while len(self._buffer) < size:
            if not await self._fill():
                break
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def next_frame(self) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); raises EOFError at the end."""
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            if not await self._fill():
                raise EOFError("the server closed the connection")

    def _take_frame(self) -> tuple[int, bytes] | None:
        data = self._buffer
        if len(data) < 2:
            return None
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                return None
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            if len(data) < 10:
                return None
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        if len(data) < offset + length:
            return None
        payload = bytes(data[offset : offset + length])
        del data[: offset + length]
        return opcode, payload

    async def close_code(self) -> int:
        """Skip frames until the server's close frame; answer it; return its code."""
        while True:
            opcode, payload = await self.next_frame()
            if opcode == OP_CLOSE:
                await self.stream.send(client_frame(close_payload(1000), OP_CLOSE))
                return int.from_bytes(payload[:2], "big")

    async def until_eof(self) -> bytes:
        """Read until the server closes the socket; return everything it sent meanwhile."""
        while await self._fill():
            pass
        received = bytes(self._buffer)
        self._buffer.clear()
        return received


def upgrade_with(headers: Iterable[tuple[str, str]]) -> bytes:
    """The minimal upgrade request with more headers."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
    return UPGRADE_REQUEST[:-2] + extra + b"\r\n"


async def send_chunked(stream: anyio.abc.ByteStream, data: bytes, chunk: int = 16384) -> None:
    """Send ``data`` in slices, so no layer has to hold more than a slice of it."""
    view = memoryview(data)
    for offset in range(0, len(data), chunk):
        await stream.send(bytes(view[offset : offset + chunk]))


class MemoryWatch:
    """Python memory allocated while the block runs, as tracemalloc sees it.

    The server runs in the test's process, so this is the server's growth
    (plus the small amount the raw peers allocate).
    """

    def __enter__(self) -> MemoryWatch:
        tracemalloc.start()
        self.baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self

    def growth(self) -> int:
        """Bytes allocated now beyond the baseline."""
        return tracemalloc.get_traced_memory()[0] - self.baseline

    def peak_growth(self) -> int:
        """The most ever allocated beyond the baseline since the block started."""
        return tracemalloc.get_traced_memory()[1] - self.baseline

    def stop(self) -> None:
        """Stop tracing (it slows every allocation down)."""
        tracemalloc.stop()

    def __exit__(self, *exc: object) -> None:
        tracemalloc.stop()


async def wait_for(condition: Any) -> None:
    """Poll ``condition()`` until true (bounded by the case's timeout)."""
    # The server reports these states through no event; polling them is exact.
    while not condition():  # noqa: ASYNC110
        await anyio.sleep(0.005)


@pytest.fixture(autouse=True)
def _quiet_security_log(caplog: pytest.LogCaptureFixture) -> None:
    """Refusals are logged at WARNING; the suite checks answers, not log lines."""
    caplog.set_level("ERROR", logger="securemcp.security")
