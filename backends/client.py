"""The WebSocket client: :class:`~securemcp.protocol.ClientConnection` on anyio sockets.

One implementation for asyncio and trio. A connection runs three kinds of task
in a task group the client owns: one reader (socket -> core -> events), one
writer (core -> socket) and, with ``on_notification``, one dispatcher that feeds
the handler. Callers never touch the socket: they put a request into the core
and wait for their own answer, so a caller that times out or is cancelled
cannot cut a frame in half.

Errors, at the edge:

- the TCP connection cannot be made: the :class:`OSError` the system gave
  (``ConnectionRefusedError``, ``socket.gaierror``, ``ssl.SSLCertVerificationError``),
  as users of sockets expect;
- the server refuses the upgrade: :class:`~securemcp.errors.HandshakeRejected`;
- no connection within ``connect_timeout``, no answer within a call's timeout:
  :class:`~securemcp.errors.RequestTimeout` (also a :class:`TimeoutError`);
- an error answer: the :class:`~securemcp.errors.RPCError` subclass for its code;
- the connection is over: :class:`~securemcp.errors.ConnectionClosed`, raised at
  once in every call still waiting.

No exception group ever leaves a public method.
"""

from __future__ import annotations

import inspect
import logging
import math
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from types import EllipsisType, TracebackType
from typing import Any, NamedTuple, Self

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from securemcp import __version__ as securemcp_version
from securemcp.errors import (
    ConnectionClosed,
    HandshakeRejected,
    InternalError,
    LocalProtocolError,
    RequestTimeout,
    SecureMCPError,
    error_for_code,
)
from securemcp.protocol import (
    ClientConnection,
    CloseCode,
    Connected,
    ConnectionRejected,
    ConnectionState,
    ErrorReceived,
    Event,
    Limits,
    NotificationReceived,
    RequestId,
    ResponseReceived,
    Welcome,
)
from securemcp.protocol import ConnectionClosed as ClosedEvent
from securemcp.protocol.mcp import SUBPROTOCOL as MCP_SUBPROTOCOL
from securemcp.protocol.mcp import TOOLS_CALL

from ._client_target import (
    connect_error,
    header_pairs,
    parse_url,
    tls_context,
    with_token,
)
from .mcp_client import (
    ProgressCallback,
    ProgressUpdate,
    ServerInfo,
    ToolResult,
    initialize_params,
    parse_initialize_result,
    parse_progress,
    parse_tool_result,
)

__all__ = ["Notification", "WebSocketClient"]

logger = logging.getLogger("securemcp.client")

_READ_SIZE = 65536
_MAX_QUEUED_PROGRESS = 64

NotificationHandler = Callable[[str, Any], Any]
"""``on_notification(method, params)``; it may return an awaitable, which is awaited."""


class Notification(NamedTuple):
    """A notification the server pushed: unpacks as ``(method, params)``."""

    method: str
    params: Any


class _Pending:
    """One call waiting for its answer."""

    __slots__ = ("done", "error", "result", "tool_call", "updates", "updates_in")

    def __init__(self, tool_call: bool, progress: bool = False) -> None:
        self.done = anyio.Event()
        self.tool_call = tool_call
        self.result: Any = None
        self.error: SecureMCPError | None = None
        # Progress updates for the caller's task; closed once the answer is in.
        self.updates_in: MemoryObjectSendStream[ProgressUpdate] | None = None
        self.updates: MemoryObjectReceiveStream[ProgressUpdate] | None = None
        if progress:
            self.updates_in, self.updates = anyio.create_memory_object_stream[ProgressUpdate](
                _MAX_QUEUED_PROGRESS
            )

    def resolve(self, result: Any = None, error: SecureMCPError | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()
        if self.updates_in is not None:
            self.updates_in.close()

    def progress(self, update: ProgressUpdate) -> None:
        if self.updates_in is None or self.updates is None or self.done.is_set():
            return
        try:
            self.updates_in.send_nowait(update)
        except anyio.WouldBlock:
            # A slow callback: the older update is the one worth losing.
            self.updates.receive_nowait()
            self.updates_in.send_nowait(update)


class _NotificationIterator:
    """Iterates notifications until the connection is over and the buffer is drained."""

    def __init__(self, stream: MemoryObjectReceiveStream[Notification]) -> None:
        self._stream = stream

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Notification:
        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None


class WebSocketClient:
    """A SecureMCP client over one WebSocket connection (``ws://`` or ``wss://``).

    Use it as an async context manager, on asyncio or trio::

        async with WebSocketClient("ws://localhost:8765") as client:
            tools = await client.list_tools()
            result = await client.invoke_tool("echo", {"message": "hi"})

    Any number of calls may be in flight at once; each gets its own answer.

    :param url: ``ws://host[:port]/path?query`` or ``wss://...`` (ports 80/443 by default).
    :param headers: extra handshake headers, e.g. ``{"Authorization": "Bearer ..."}``.
    :param subprotocols: subprotocols to offer; the chosen one is :attr:`subprotocol`.
    :param ssl: for ``wss://``, an :class:`ssl.SSLContext`, or ``None``/``True`` for
        :func:`ssl.create_default_context`.
    :param timeout: default per-call timeout in seconds (``None``: wait forever).
    :param connect_timeout: bound on TCP connect, TLS and WebSocket handshake together.
    :param close_timeout: how long closing waits for the server's close frame.
    :param on_notification: ``handler(method, params)`` for server notifications,
        called one at a time in a task of the client (an awaitable it returns is
        awaited, and it may make calls); its exceptions are logged. Without it,
        read notifications with :meth:`notifications`.
    :param max_queued_notifications: notifications buffered for a consumer that
        lags; past that the *oldest* is dropped (counted in
        :attr:`dropped_notifications`, logged), so a chatty server cannot grow
        memory or stall the answers behind it.
    :param limits: the core's :class:`~securemcp.protocol.Limits` (message size, depth).
    :param token: a bearer token, sent as ``Authorization: Bearer <token>`` (never in the URL).
    :param token_in_subprotocol: send ``token`` as the subprotocol entry
        ``bearer.<token>`` instead, as a browser must (its WebSocket API cannot set
        headers); the server never echoes it back. Such a token must be
        base64url without padding (letters, digits, ``-._~+``).
    :param mcp: speak MCP (see ``docs/mcp.md``): offer the ``mcp`` subprotocol and
        run the ``initialize`` handshake on connecting. The client also speaks MCP
        whenever the server chooses ``mcp`` from ``subprotocols``.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
        ssl: ssl_module.SSLContext | bool | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        on_notification: NotificationHandler | None = None,
        max_queued_notifications: int = 256,
        limits: Limits | None = None,
        token: str | None = None,
        token_in_subprotocol: bool = False,
        mcp: bool = False,
    ) -> None:
        if isinstance(subprotocols, str):
            raise TypeError("subprotocols must be a sequence of strings, not a string")
        if max_queued_notifications < 1:
            raise ValueError("max_queued_notifications must be at least 1")
        self.url = url
        self._target = parse_url(url)
        self._ssl_context = tls_context(self._target, ssl)
        self._headers = header_pairs(headers)
        self._subprotocols = tuple(subprotocols)
        if token is not None:
            self._headers, self._subprotocols = with_token(
                token, token_in_subprotocol, self._headers, self._subprotocols
            )
        elif token_in_subprotocol:
            raise ValueError("token_in_subprotocol needs a token")
        self._mcp = mcp
        if mcp and MCP_SUBPROTOCOL not in self._subprotocols:
            self._subprotocols = (MCP_SUBPROTOCOL, *self._subprotocols)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self._on_notification = on_notification
        self._max_queued = max_queued_notifications
        self._limits = limits

        self.welcome: Welcome | None = None
        """The server's greeting (seed dialect), once it has arrived."""
        self.subprotocol: str | None = None
        """The subprotocol the server chose, if any."""
        self.close_code: int | None = None
        """The WebSocket close code once the connection is over, else ``None``."""
        self.close_reason = ""
        """The close reason once the connection is over."""
        self.dropped_notifications = 0
        """How many notifications were dropped because the consumer lagged."""
        self.server_info: ServerInfo | None = None
        """MCP: the server's ``initialize`` answer (revision, name, capabilities)."""

        self._progress_routes: dict[str, _Pending] = {}
        self._next_progress_token = 0
        self._conn: ClientConnection | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._pending: dict[RequestId, _Pending] = {}
        self._notes_in: MemoryObjectSendStream[Notification] | None = None
        self._notes_out: MemoryObjectReceiveStream[Notification] | None = None
        self._write_wanted = anyio.Event()
        self._write_progress = anyio.Event()
        self._reader_scope: anyio.CancelScope | None = None
        self._task_scopes: list[anyio.CancelScope] = []
        self._writer_done = anyio.Event()
        self._reader_done = anyio.Event()
        self._closed = anyio.Event()

    def __repr__(self) -> str:
        state = self._conn.state.value if self._conn is not None else "unconnected"
        return f"<WebSocketClient {self.url} {state}>"

    # Life cycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the connection: TCP, TLS for ``wss://``, then the WebSocket handshake.

        Prefer ``async with``; if you call this, call :meth:`aclose` from the same
        task, because the client's task group spans the time in between.
        """
        if self._conn is not None:
            raise LocalProtocolError("connect() was already called on this client")
        self._conn = ClientConnection(limits=self._limits)
        send, receive = anyio.create_memory_object_stream[Notification](self._max_queued)
        self._notes_in, self._notes_out = send, receive
        try:
            stream = await self._open()
        except BaseException:
            send.close()
            receive.close()
            self._closed.set()
            raise
        # The tasks are shielded from the caller's cancellation: an `async with`
        # body that is cancelled still gets a (bounded) clean close. aclose()
        # cancels their scopes itself.
        self._reader_scope = anyio.CancelScope(shield=True)
        writer_scope = anyio.CancelScope(shield=True)
        self._task_scopes = [self._reader_scope, writer_scope]
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._read_loop, stream)
        task_group.start_soon(self._in_scope, writer_scope, partial(self._write_loop, stream))
        if self._on_notification is not None:
            dispatch_scope = anyio.CancelScope(shield=True)
            self._task_scopes.append(dispatch_scope)
            task_group.start_soon(
                self._in_scope,
                dispatch_scope,
                partial(self._dispatch_notifications, receive, self._on_notification),
            )
        if self.speaks_mcp:
            try:
                await self._initialize()
            except BaseException:
                await self.aclose()
                raise

    @property
    def speaks_mcp(self) -> bool:
        """Whether this connection speaks MCP (asked for, or the ``mcp`` subprotocol chosen)."""
        return self._mcp or self.subprotocol == MCP_SUBPROTOCOL

    async def _initialize(self) -> None:
        """MCP's opening: ``initialize``, check the revision, ``notifications/initialized``."""
        conn = self._require_conn()
        conn.jsonrpc = True
        result = await self._call(
            "initialize",
            initialize_params(securemcp_version),
            self.connect_timeout,
            tool_call=False,
        )
        self.server_info = parse_initialize_result(result)
        if conn.state is ConnectionState.OPEN:
            conn.notify("notifications/initialized")
            self._write_wanted.set()

    async def _open(self) -> anyio.abc.ByteStream:
        target = self._target
        stream: anyio.abc.ByteStream | None = None
        with anyio.move_on_after(self.connect_timeout) as scope:
            try:
                if self._ssl_context is not None:
                    stream = await anyio.connect_tcp(
                        target.host,
                        target.port,
                        ssl_context=self._ssl_context,
                        tls_hostname=target.host,
                        # The WebSocket close handshake already protects against
                        # truncation, and servers often skip TLS close_notify.
                        tls_standard_compatible=False,
                    )
                else:
                    stream = await anyio.connect_tcp(target.host, target.port)
            except OSError as exc:
                raise connect_error(exc, self.url) from None
            try:
                await self._handshake(stream)
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
        if scope.cancelled_caught:
            # A stream opened in time was closed by the handler above.
            raise RequestTimeout(f"could not connect to {self.url} within {self.connect_timeout} s")
        assert stream is not None
        return stream

    async def _handshake(self, stream: anyio.abc.ByteStream) -> None:
        conn = self._require_conn()
        conn.connect(
            self._target.host_header,
            self._target.resource,
            subprotocols=self._subprotocols,
            extra_headers=self._headers,
        )
        await stream.send(conn.data_to_send())
        while True:
            try:
                data = await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                conn.receive_eof()
            else:
                conn.receive_data(data)
            events = conn.events_received()
            for index, event in enumerate(events):
                if isinstance(event, Connected):
                    self.subprotocol = event.subprotocol
                    # The welcome often travels with the upgrade answer.
                    self._handle(events[index + 1 :])
                    return
                if isinstance(event, ConnectionRejected):
                    raise HandshakeRejected(event.status_code, event.body, event.headers)
                if isinstance(event, ClosedEvent):
                    raise ConnectionClosed(event.code, "connection lost during the handshake")

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection with ``code`` and wait (up to ``close_timeout``) for the server.

        Calls still waiting raise :class:`~securemcp.errors.ConnectionClosed`.
        Harmless when the client is already closed or was never connected.
        """
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        conn = self._require_conn()
        # Shielded: closing must finish even when the caller is being cancelled
        # (an `async with` body that timed out), and it is bounded by close_timeout.
        with anyio.move_on_after(self.close_timeout, shield=True):
            if conn.state is ConnectionState.OPEN:
                conn.close(code, reason)
                self._write_wanted.set()
            await self._reader_done.wait()
        # The task group's scope encloses the caller's code since connect(), so
        # it must be exited right here, in the caller's own scope (no shield).
        for scope in self._task_scopes:
            scope.cancel()
        task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)
        except BaseExceptionGroup as group:  # pragma: no cover - the tasks catch all
            raise group.exceptions[0] if len(group.exceptions) == 1 else group from None
        finally:
            if self._notes_out is not None:
                self._notes_out.close()

    async def wait_closed(self) -> None:
        """Return once the connection is over (:attr:`close_code` is then set)."""
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        """Whether the connection is over (true as well after a failed connect)."""
        return self._closed.is_set()

    @property
    def pending_count(self) -> int:
        """How many calls are waiting for an answer (the core's pending table)."""
        return len(self._conn.pending) if self._conn is not None else 0

    # Calls

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109 - per-call timeout is the API
    ) -> Any:
        """Send any request and return its ``result``.

        ``timeout`` defaults to the client's; ``None`` waits forever. Raises the
        :class:`~securemcp.errors.RPCError` subclass of an error answer,
        :class:`~securemcp.errors.RequestTimeout`, or
        :class:`~securemcp.errors.ConnectionClosed`. ``params`` that JSON cannot
        hold raise :class:`ValueError` before anything is sent.
        """
        return await self._call(method, params, timeout, tool_call=False)

    async def invoke_tool(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109 - per-call timeout is the API
    ) -> Any:
        """Call tool ``name`` with ``params`` and return what it returned.

        An unknown tool raises :class:`~securemcp.errors.ToolNotFound`, bad
        arguments :class:`~securemcp.errors.InvalidParams` (``data`` says
        which), a failing tool :class:`~securemcp.errors.ToolError`.

        Over MCP this is :meth:`call_tool` then :meth:`ToolResult.value`: an
        unknown tool raises :class:`~securemcp.errors.InvalidParams`, and bad
        arguments, like a failing tool, :class:`~securemcp.errors.ToolError`.
        """
        if self.speaks_mcp:
            result = await self.call_tool(name, params, timeout=timeout)
            return result.value()
        payload = {"tool_name": name, "params": dict(params) if params is not None else {}}
        return await self._call("invoke_tool", payload, timeout, tool_call=True)

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109 - per-call timeout is the API
        on_progress: ProgressCallback | None = None,
    ) -> ToolResult:
        """MCP ``tools/call``: run tool ``name`` and return its :class:`ToolResult`.

        A tool's failure is a result with ``is_error`` set, not an exception;
        protocol errors (unknown tool: -32602) raise their
        :class:`~securemcp.errors.RPCError`. ``on_progress(update)`` receives
        the tool's progress reports in this task, before the result returns.
        When the wait ends early (timeout, cancellation), the server is told
        with ``notifications/cancelled``.
        """
        if not self.speaks_mcp:
            raise LocalProtocolError(
                "call_tool needs an MCP connection (WebSocketClient(mcp=True))"
            )
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = dict(arguments)
        result = await self._call(
            TOOLS_CALL, params, timeout, tool_call=True, on_progress=on_progress
        )
        return parse_tool_result(result)

    async def list_tools(
        self,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        """The server's tools: one dict each (``name``, ``description``, ``inputSchema``, ...).

        Over MCP, every page of ``tools/list``, in the server's order.
        """
        if self.speaks_mcp:
            return await self._list_mcp_tools(timeout)
        result = await self._call("list_tools", None, timeout, tool_call=False)
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            raise InternalError("malformed list_tools answer: no 'tools' list")
        return tools

    async def _list_mcp_tools(
        self,
        timeout: float | EllipsisType | None,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: Any = None
        seen: set[str] = set()
        while True:
            params = None if cursor is None else {"cursor": cursor}
            result = await self._call("tools/list", params, timeout, tool_call=False)
            page = result.get("tools") if isinstance(result, dict) else None
            if not isinstance(page, list):
                raise InternalError("malformed tools/list answer: no 'tools' list")
            tools.extend(page)
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str):
                return tools
            if cursor in seen:
                # A server that pages in a circle would keep us here for ever.
                raise InternalError("malformed tools/list answer: the cursor repeats")
            seen.add(cursor)

    async def ping(
        self,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109
    ) -> float:
        """Send a ``ping`` request; return the round trip in seconds."""
        start = anyio.current_time()
        await self._call("ping", None, timeout, tool_call=False)
        return anyio.current_time() - start

    def notifications(self) -> AsyncIterator[Notification]:
        """Iterate over the server's notifications as ``(method, params)`` pairs.

        The iteration ends once the connection is over and the buffered
        notifications are consumed. A consumer that lags loses the oldest ones
        (see ``max_queued_notifications``). Not available with ``on_notification``.
        """
        if self._on_notification is not None:
            raise LocalProtocolError("notifications go to on_notification on this client")
        if self._notes_out is None:
            raise LocalProtocolError("the client is not connected")
        return _NotificationIterator(self._notes_out)

    async def _call(
        self,
        method: str,
        params: Any,
        timeout: float | EllipsisType | None,  # noqa: ASYNC109
        *,
        tool_call: bool,
        on_progress: ProgressCallback | None = None,
    ) -> Any:
        conn = self._require_conn()
        if conn.state is not ConnectionState.OPEN:
            if conn.state is ConnectionState.CONNECTING:
                raise LocalProtocolError("the client is not connected")
            raise ConnectionClosed(
                self.close_code, self.close_reason or "the connection is closing"
            )
        limit = self.timeout if isinstance(timeout, EllipsisType) else timeout
        progress_token: str | None = None
        if on_progress is not None:
            self._next_progress_token += 1
            progress_token = f"progress-{self._next_progress_token}"
            params = {**params, "_meta": {"progressToken": progress_token}}
        request_id = conn.send_request(method, params)
        pending = self._pending[request_id] = _Pending(tool_call, on_progress is not None)
        if progress_token is not None:
            self._progress_routes[progress_token] = pending
        self._write_wanted.set()
        try:
            with anyio.move_on_after(math.inf if limit is None else limit):
                if on_progress is None or pending.updates is None:
                    await pending.done.wait()
                else:
                    # Updates end when the answer arrives (resolve closes the stream).
                    async for update in pending.updates:
                        outcome = on_progress(update)
                        if inspect.isawaitable(outcome):
                            await outcome
                    await pending.done.wait()
        finally:
            if progress_token is not None:
                self._progress_routes.pop(progress_token, None)
            if pending.updates is not None and pending.updates_in is not None:
                pending.updates_in.close()
                pending.updates.close()
            if not pending.done.is_set():
                # Timed out or cancelled: leave the pending table, so that a late
                # answer is dropped by the core.
                self._pending.pop(request_id, None)
                conn.forget(request_id)
                if (
                    self.speaks_mcp
                    and method != "initialize"
                    and conn.state is ConnectionState.OPEN
                ):
                    # MCP: tell the server to stop (it must not cancel initialize).
                    conn.notify(
                        "notifications/cancelled",
                        {"requestId": request_id, "reason": "the caller stopped waiting"},
                    )
                    self._write_wanted.set()
        if not pending.done.is_set():
            raise RequestTimeout(f"no answer to {method!r} within {limit} s")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _require_conn(self) -> ClientConnection:
        if self._conn is None:
            raise LocalProtocolError(
                "the client is not connected: use 'async with WebSocketClient(...)'"
            )
        return self._conn

    # Tasks

    async def _read_loop(self, stream: anyio.abc.ByteStream) -> None:
        conn = self._require_conn()
        assert self._reader_scope is not None
        try:
            with self._reader_scope:
                while conn.state is not ConnectionState.CLOSED:
                    if not conn.wants_read:
                        # Our own output is over its limit: let the writer drain it.
                        await self._write_progress.wait()
                        continue
                    try:
                        data = await stream.receive(_READ_SIZE)
                    except (
                        anyio.EndOfStream,
                        anyio.BrokenResourceError,
                        anyio.ClosedResourceError,
                        OSError,
                    ):
                        conn.receive_eof()
                    else:
                        conn.receive_data(data)
                    self._handle(conn.events_received())
                    self._write_wanted.set()
        finally:
            if conn.state is not ConnectionState.CLOSED:
                conn.receive_eof()
                self._handle(conn.events_received())
            # Shielded: the caller's scope may be cancelled, and the socket must
            # be closed and _reader_done set whatever happens.
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.close_timeout):
                    # Let the writer flush the last frames (our close reply).
                    self._write_wanted.set()
                    await self._writer_done.wait()
                await anyio.aclose_forcefully(stream)
                self._reader_done.set()

    @staticmethod
    async def _in_scope(scope: anyio.CancelScope, task: Callable[[], Awaitable[None]]) -> None:
        with scope:
            await task()

    async def _write_loop(self, stream: anyio.abc.ByteStream) -> None:
        # The only task that writes, so frames are never interleaved and a
        # caller's cancellation never interrupts a write.
        conn = self._require_conn()
        try:
            while True:
                data = conn.data_to_send()
                # Draining output may unpause input the core had buffered.
                self._handle(conn.events_received())
                if data:
                    await stream.send(data)
                    self._write_progress.set()
                    self._write_progress = anyio.Event()
                    continue
                if conn.state is ConnectionState.CLOSED:
                    return
                await self._write_wanted.wait()
                self._write_wanted = anyio.Event()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            conn.receive_eof()
            self._handle(conn.events_received())
        finally:
            self._writer_done.set()
            self._write_progress.set()

    async def _dispatch_notifications(
        self, notes: MemoryObjectReceiveStream[Notification], handler: NotificationHandler
    ) -> None:
        async for method, params in _NotificationIterator(notes):
            try:
                outcome = handler(method, params)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                # A handler's bug must not kill the connection.
                logger.exception("on_notification handler failed for %r", method)

    # Events

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ResponseReceived):
                pending = self._pending.pop(event.id, None)
                if pending is not None:
                    pending.resolve(result=event.result)
            elif isinstance(event, ErrorReceived):
                pending = self._pending.pop(event.id, None)
                if pending is not None:
                    pending.resolve(
                        error=error_for_code(
                            event.code, event.message, event.data, tool_call=pending.tool_call
                        )
                    )
            elif isinstance(event, NotificationReceived):
                if event.method == "notifications/progress" and self._route_progress(event.params):
                    continue
                self._queue_notification(Notification(event.method, event.params))
            elif isinstance(event, Welcome):
                self.welcome = event
            elif isinstance(event, ClosedEvent):
                self._on_closed(event)

    def _route_progress(self, params: Any) -> bool:
        """Hand a progress report to the call that asked for it; ``False`` if none did."""
        parsed = parse_progress(params)
        if parsed is None:
            return False
        token, update = parsed
        pending = self._progress_routes.get(token) if isinstance(token, str) else None
        if pending is None:
            return False
        pending.progress(update)
        return True

    def _queue_notification(self, note: Notification) -> None:
        assert self._notes_in is not None
        assert self._notes_out is not None
        try:
            self._notes_in.send_nowait(note)
        except anyio.WouldBlock:
            self._notes_out.receive_nowait()
            self._notes_in.send_nowait(note)
            self.dropped_notifications += 1
            if self.dropped_notifications == 1:
                logger.warning(
                    "notification consumer lags: dropping the oldest (max_queued_notifications=%d)",
                    self._max_queued,
                )

    def _on_closed(self, event: ClosedEvent) -> None:
        self.close_code, self.close_reason = event.code, event.reason
        waiting, self._pending = self._pending, {}
        for pending in waiting.values():
            pending.resolve(error=ConnectionClosed(event.code, event.reason))
        if self._notes_in is not None:
            self._notes_in.close()
        self._closed.set()
        # Nothing more can arrive; the writer flushes what is left (a close reply).
        self._stop_reading()
        self._write_wanted.set()

    def _stop_reading(self) -> None:
        if self._reader_scope is not None:
            self._reader_scope.cancel()
