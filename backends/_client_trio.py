"""The client on trio: one lean reader task per connection feeds the core.

There is no writer task. Whoever has bytes to send (a caller with its request,
the reader with a pong or a close reply) hands them to the socket itself,
unless a drain is under way (a flag, not a lock): on plain TCP that is one
``send()`` call, which the kernel almost always takes whole. What it does not
take, and every write on TLS, goes to a short-lived drain task that runs until
the core is empty; so no caller ever waits for the peer to read, and a
caller's cancellation cannot cut a frame. The reader waits for the drain only
while the core's ``wants_read`` is false. A call waits on a bare trio task
wake-up, the least trio can do.

anyio on trio or trio's own API: anyio's ``connect_tcp`` (happy eyeballs, the
errors the rest of SecureMCP reports) and its TLS stream, and its ``receive``,
which adds little to trio's. Sends bypass both: the profile showed trio's
socket ``send`` wrapper (its checkpoints and ``_try_sync`` context manager)
at several percent of the client's time, where a plain ``socket.send`` costs
only the system call.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import trio

from securemcp.protocol import ConnectionState

from ._client_io import INFINITY, ClientIO, Signal, Waiter
from ._client_target import connect_error

if TYPE_CHECKING:
    from ._client_session import ClientSession

__all__ = ["TrioIO"]

_READ_SIZE = 65536
_YIELD_EVERY = 16
"""Reads served without waiting before the reader yields to other tasks once anyway."""
_CLOSED = ConnectionState.CLOSED
_LOST = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    trio.ClosedResourceError,
    OSError,
)


class _TrioWaiter:
    """One task parked until :meth:`set_result`; cancellation unparks it."""

    __slots__ = ("_done", "_task", "_value")

    def __init__(self) -> None:
        self._done = False
        self._task: trio.lowlevel.Task | None = None
        self._value: Any = None

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        return self._value

    def set_result(self, value: Any, /) -> None:
        self._value, self._done = value, True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self._done:
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


class TrioIO(ClientIO):
    """One client connection: a stream and the reader task that feeds the core."""

    def __init__(
        self,
        session: ClientSession,
        stream: anyio.abc.ByteStream,
        raw: socket.socket | None,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        self._session = session
        self._conn = session.conn
        self._stream = stream
        self._raw = raw
        self._tg = tg
        self._deadline = INFINITY
        self._timer_scope: trio.CancelScope | None = None
        self._writing = False
        self._unsent = b""
        self._write_scope: trio.CancelScope | None = None
        self._idle = Signal()
        # The tasks are shielded from the caller's cancellation (the task group
        # encloses the caller's code): an `async with` body that is cancelled
        # still gets a clean close. shutdown() cancels their scopes itself.
        self._scopes = [trio.CancelScope(shield=True), trio.CancelScope(shield=True)]
        self._reader_done = trio.Event()
        self._ready_reads = 0

    @classmethod
    async def open(cls, session: ClientSession, deadline: float) -> TrioIO | None:
        target, ssl_context = session.target, session.ssl_context
        stream: anyio.abc.ByteStream | None = None
        with anyio.move_on_at(deadline):
            try:
                if ssl_context is None:
                    stream = await anyio.connect_tcp(target.host, target.port)
                else:
                    stream = await anyio.connect_tcp(
                        target.host,
                        target.port,
                        ssl_context=ssl_context,
                        tls_hostname=target.host,
                        # The WebSocket close handshake already protects against
                        # truncation, and servers often skip TLS close_notify.
                        tls_standard_compatible=False,
                    )
            except OSError as exc:
                raise connect_error(exc, session.url) from None
        if stream is None:
            return None
        # A plain TCP stream's socket takes our bytes directly (see _send).
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket) if ssl_context is None else None
        return await cls.start(session, stream, raw)

    @classmethod
    async def start(
        cls,
        session: ClientSession,
        stream: anyio.abc.ByteStream,
        raw: socket.socket | None = None,
    ) -> TrioIO:
        """Start feeding ``session`` from ``stream``, a connected byte stream (any: TCP,
        TLS, the test kit's in-memory one); ``raw``, its plain TCP socket if it has one."""
        # Entered here, outside open()'s deadline scope: it lives until shutdown().
        tg = anyio.create_task_group()
        await tg.__aenter__()
        io = cls(session, stream, raw, tg)
        tg.start_soon(io._in_scope, io._scopes[0], io._read_loop)
        tg.start_soon(io._in_scope, io._scopes[1], io._timer_loop)
        return io

    @staticmethod
    async def _in_scope(scope: trio.CancelScope, task: Callable[[], Awaitable[None]]) -> None:
        with scope:
            await task()

    # Reading

    async def _read_loop(self) -> None:
        conn, session, stream = self._conn, self._session, self._stream
        try:
            while conn.state is not _CLOSED:
                if not conn.wants_read:
                    # Our own output is over its limit: wait for the drain task.
                    self._send()
                    if self._writing:
                        await self._idle.wait(self)
                    continue
                try:
                    data = await self._receive()
                except _LOST:
                    conn.receive_eof()
                else:
                    conn.receive_data(data)
                session.handle(conn.events_received())
                # Pongs and close replies; callers send their own requests.
                self._send()
        finally:
            session.lost()
            # Shielded: the socket must be closed whatever happens; shutdown()
            # cancels a last write that the peer does not take.
            with trio.CancelScope(shield=True):
                self._send()
                if self._writing:
                    await self._idle.wait(self)
                await anyio.aclose_forcefully(stream)
            self._reader_done.set()

    async def _receive(self) -> bytes:
        """The next bytes from the server.

        On plain TCP straight from the socket: trio's own ``recv`` yields to
        the scheduler after every read it did not have to wait for, an extra
        pass of trio's run loop per message; here a read that had to wait has
        yielded already, and one in :data:`_YIELD_EVERY` of the others yields,
        so that a server flooding us cannot starve the rest of the program.
        """
        raw = self._raw
        if raw is None:
            return await self._stream.receive(_READ_SIZE)
        while True:
            try:
                data = raw.recv(_READ_SIZE)
            except BlockingIOError:
                self._ready_reads = 0
                await trio.lowlevel.wait_readable(raw)
                continue
            if not data:
                raise anyio.EndOfStream
            self._ready_reads += 1
            if self._ready_reads >= _YIELD_EVERY:
                self._ready_reads = 0
                await trio.lowlevel.checkpoint()
            return data

    # Writing

    def _send(self) -> None:
        """Write what the core holds, unless the drain task is writing (it will).

        On plain TCP the bytes go straight to the socket: almost always the
        kernel takes them all at once, with one system call and no task switch.
        What it does not take, and everything on TLS, goes to a drain task, so
        that no caller ever waits for the peer to read: a caller's timeout or
        cancellation then cannot strand half a frame, and the connection goes
        on (the asyncio transport behaves the same way).
        """
        if self._writing:
            return
        conn, raw = self._conn, self._raw
        while data := conn.data_to_send():
            # Draining the output may let the core process input it held back.
            self._session.handle(conn.events_received())
            sent = 0
            if raw is not None:
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    pass
                except OSError:
                    self._fail()
                    return
            if sent < len(data):
                self._unsent = data[sent:]
                self._writing = True
                self._tg.start_soon(self._drain)
                return

    async def _drain(self) -> None:
        """Send the bytes the socket did not take, then all the core holds, then stop."""
        conn, stream = self._conn, self._stream
        try:
            # Shielded from the caller's cancellation (the task group encloses
            # the caller's code); shutdown() cancels it.
            with trio.CancelScope(shield=True) as self._write_scope:
                data = self._unsent
                while data:
                    await stream.send(data)
                    data = conn.data_to_send()
                    self._session.handle(conn.events_received())
        except _LOST:
            self._fail()
        finally:
            self._unsent = b""
            self._write_scope = None
            self._writing = False
            self._idle.fire()

    def _fail(self) -> None:
        self._session.lost()
        self._scopes[0].cancel()

    # ClientIO

    def time(self) -> float:
        return trio.current_time()

    def waiter(self) -> Waiter:
        return _TrioWaiter()

    async def wait(self, waiter: Waiter) -> Any:
        parked = cast(_TrioWaiter, waiter)
        await parked.wait()
        return parked.result()

    def arm(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer_scope is not None:
            self._timer_scope.deadline = deadline

    async def _timer_loop(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            self._deadline = INFINITY
            self._session.expire(trio.current_time())

    @property
    def write_blocked(self) -> bool:
        # The drain task is at work and the core holds more than it should.
        return self._writing and not self._conn.wants_read

    async def writable(self) -> None:
        await self._idle.wait(self)

    def write(self) -> None:
        self._send()

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        scope = trio.CancelScope(shield=True)
        self._scopes.append(scope)
        self._tg.start_soon(self._in_scope, scope, task)

    def abort(self) -> None:
        # The reader ends (the session sees the loss) and closes the stream; a
        # write the server does not take is not waited for.
        if self._write_scope is not None:
            self._write_scope.cancel()
        self._scopes[0].cancel()

    async def shutdown(self, deadline: float) -> None:
        for scope in self._scopes:
            scope.cancel()
        with trio.move_on_at(deadline) as bounded:
            bounded.shield = True
            await self._reader_done.wait()
        if not self._reader_done.is_set():
            # The peer does not take our last bytes: give up on them.
            if self._write_scope is not None:
                self._write_scope.cancel()
            with trio.CancelScope(shield=True):
                await self._reader_done.wait()
        # The task group's scope encloses the caller's code since open(), so it
        # must be exited right here, in the caller's own scope (no shield).
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(None, None, None)
        except BaseExceptionGroup as group:  # pragma: no cover - the tasks catch all
            raise group.exceptions[0] if len(group.exceptions) == 1 else group from None
