"""The MCP Streamable HTTP client: :class:`HTTPClient`, on asyncio (and uvloop) or trio.

The clients of the official MCP SDK 2.x have no WebSocket transport: they
speak Streamable HTTP, one POST per JSON-RPC message. This client speaks it to
any MCP server, with the API of ``WebSocketClient(url, mcp=True)``:
:meth:`~HTTPClient.list_tools`, :meth:`~HTTPClient.call_tool`,
:meth:`~HTTPClient.invoke_tool`, :meth:`~HTTPClient.ping`, the same errors.

Two eras of the transport, chosen on connecting (``protocol="auto"``):

- 2026-07-28, stateless: ``server/discover`` first; then every request carries
  ``_meta`` (``io.modelcontextprotocol/protocolVersion``, the client's
  capabilities and info) and the ``MCP-Protocol-Version``, ``Mcp-Method`` and
  (for ``tools/call``) ``Mcp-Name`` headers. No session.
- 2025-11-25 down to 2024-11-05, with a handshake: when the server does not
  answer ``server/discover`` (any JSON-RPC error, any HTTP status but 401/403),
  ``initialize`` over POST, the ``Mcp-Session-Id`` it may give echoed on every
  later request with ``MCP-Protocol-Version``, and a DELETE of the session on
  closing.

Either way an answer is one JSON body or a ``text/event-stream`` scoped to the
request, whose progress notifications go to the call's ``on_progress`` (in the
caller's task, before the result returns).

HTTP/1.1 is spoken with h11 over anyio streams: h11 is installed already (wsproto
is built on it), it keeps the client's I/O on anyio like the WebSocket client,
and it adds no dependency. Idle keep-alive connections are kept for reuse; a
request that finds its reused connection closed by the server before any byte
of the answer is sent again on a new one.

Errors, at the edge: the :class:`OSError` of a failed TCP connect;
:class:`HTTPRejected` (a :class:`~securemcp.errors.HandshakeRejected`) for an
HTTP status without a JSON-RPC answer (401 and 403 among them, with their
``www-authenticate``); :class:`~securemcp.errors.RequestTimeout`; the
:class:`~securemcp.errors.RPCError` subclass of an error answer;
:class:`~securemcp.errors.ConnectionClosed` when the server cut an answer short.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import re
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import EllipsisType, TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.abc
import h11

from securemcp import __version__ as securemcp_version
from securemcp.errors import (
    ConnectionClosed,
    HandshakeRejected,
    InternalError,
    LocalProtocolError,
    RequestTimeout,
    RPCError,
    error_for_code,
)
from securemcp.protocol.mcp import TOOLS_CALL, UnsupportedProtocolVersion

from ._client_target import Target, connect_error, header_pairs, parse_url, tls_context, with_token
from .mcp_client import (
    CLIENT_NAME,
    ProgressCallback,
    ServerInfo,
    ToolResult,
    initialize_params,
    parse_initialize_result,
    parse_progress,
    parse_tool_result,
)

__all__ = [
    "MODERN_PROTOCOL_VERSION",
    "HTTPClient",
    "HTTPRejected",
    "NotificationCallback",
]

logger = logging.getLogger("securemcp.client")

MODERN_PROTOCOL_VERSION = "2026-07-28"
"""The stateless revision: no handshake, a ``_meta`` envelope on every request."""

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO_META = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"

# The parameter that names what a request acts on, sent again as ``Mcp-Name``.
_NAME_PARAMS = {TOOLS_CALL: "name", "prompts/get": "name", "resources/read": "uri"}
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")
_BASE64_SENTINEL = re.compile(r"=\?base64\?.*\?=")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_READ_SIZE = 65536

NotificationCallback = Callable[[str, Any], "Awaitable[None] | None"]
"""``on_notification(method, params)`` for notifications that are not a call's progress."""


class HTTPRejected(HandshakeRejected):
    """The server answered with an HTTP status instead of a JSON-RPC answer (401, 403, 404...)."""

    def __init__(
        self, status_code: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(status_code, body, headers)
        self.args = (f"HTTP request rejected with HTTP {status_code}",)


def header_value(value: str) -> str:
    """``value`` as an HTTP header carries it: verbatim, or base64 in ``=?base64?...?=``."""
    if (
        _HEADER_SAFE.fullmatch(value)
        and value == value.strip()
        and not _BASE64_SENTINEL.fullmatch(value)
    ):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


def parse_http_url(url: str) -> Target:
    """Check an ``http://`` / ``https://`` URL; ``ValueError`` says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(f"unsupported URL in {url!r}: use http:// or https://")
    # The WebSocket client's checks (credentials, fragment, host, port) apply as they are.
    return parse_url(("wss" if scheme.lower() == "https" else "ws") + "://" + rest)


class SSEParser:
    """Server-sent events, fed bytes as they arrive: the ``data`` of each event."""

    def __init__(self, max_size: int) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._max_size = max_size

    def feed(self, chunk: bytes) -> list[str]:
        """The events completed by ``chunk`` (their data, lines joined by ``\\n``)."""
        buffer = self._buffer
        buffer += chunk
        events: list[str] = []
        start = 0
        while True:
            match = _LINE_END.search(buffer, start)
            # A lone CR at the end may be the first half of CRLF: wait for more.
            if match is None or (match.group() == b"\r" and match.end() == len(buffer)):
                break
            self._line(bytes(buffer[start : match.start()]).decode("utf-8", "replace"), events)
            start = match.end()
        del buffer[:start]
        if len(buffer) + sum(map(len, self._data)) > self._max_size:
            raise InternalError(f"a server-sent event exceeds {self._max_size} bytes")
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(":"):
            return
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value.removeprefix(" "))
        # "event", "id" and "retry" need nothing here: every event carries one message.


class _Connection:
    """One HTTP/1.1 connection: an anyio byte stream and an h11 state machine."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False
        self.received = 0
        """Bytes read from the server in the current exchange."""

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send(data)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self.stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                data = b""
            self.received += len(data)
            self.h11.receive_data(data)

    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and the server keeps the connection open."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.received = 0
            return True
        return False

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()


class _Answer:
    """What came back for one POST, as :meth:`HTTPClient._exchange` read it."""

    def __init__(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        self.status = status
        self.headers = headers
        self.message: Any = None
        self.body = b""

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


class HTTPClient:
    """An MCP client over Streamable HTTP (``http://`` or ``https://``).

    Use it as an async context manager, on asyncio or trio::

        async with HTTPClient("http://localhost:8000/mcp") as client:
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"message": "hi"})

    Any number of calls may be in flight at once, each on a connection of its own.

    :param url: the server's MCP endpoint, ``http://host[:port]/path`` or ``https://...``.
    :param headers: extra headers sent with every request.
    :param token: a bearer token, sent as ``Authorization: Bearer <token>``.
    :param ssl: for ``https://``, an :class:`ssl.SSLContext`, or ``None``/``True``
        for :func:`ssl.create_default_context`.
    :param timeout: default per-call timeout in seconds (``None``: wait forever).
    :param connect_timeout: bound on the opening (``server/discover`` or ``initialize``).
    :param close_timeout: bound on closing (the DELETE of a session).
    :param protocol: ``"auto"`` (``server/discover``, else ``initialize``),
        ``"modern"`` (2026-07-28 only) or ``"legacy"`` (``initialize`` only).
    :param on_notification: ``handler(method, params)`` for the notifications an
        answer's event stream carries that are not a call's progress; without
        it they are logged at debug level and dropped.
    :param max_message_size: the largest answer (or event) accepted, in bytes.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        token: str | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        protocol: Literal["auto", "modern", "legacy"] = "auto",
        on_notification: NotificationCallback | None = None,
        max_message_size: int = 16 * 1024 * 1024,
    ) -> None:
        if protocol not in ("auto", "modern", "legacy"):
            raise ValueError(f"protocol must be 'auto', 'modern' or 'legacy', not {protocol!r}")
        self.url = url
        self.target = parse_http_url(url)
        self._ssl = tls_context(self.target, ssl)
        extra = header_pairs(headers)
        if token is not None:
            extra, _ = with_token(token, False, extra, ())
        self._headers = extra
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.protocol = protocol
        self._on_notification = on_notification
        self.max_message_size = max_message_size
        self.server_info: ServerInfo | None = None
        """The server's ``initialize`` answer, or for 2026-07-28 what ``server/discover`` said."""
        self.protocol_version: str | None = None
        """The revision in use once connected."""
        self.session_id: str | None = None
        """The ``Mcp-Session-Id`` the server gave on ``initialize``, if any."""
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._idle: list[_Connection] = []
        self._renewing = anyio.Lock()
        self._state: Literal["new", "open", "closed"] = "new"

    def __repr__(self) -> str:
        return f"<HTTPClient {self.url} {self._state} {self.protocol_version or ''}>".rstrip()

    @property
    def stateless(self) -> bool:
        """Whether the 2026-07-28 revision is in use (no handshake, no session)."""
        return self.protocol_version == MODERN_PROTOCOL_VERSION

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def speaks_mcp(self) -> bool:
        """Always true: Streamable HTTP is MCP's transport (the WebSocket client's property)."""
        return True

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
        """Learn the server's revision: ``server/discover``, else the ``initialize`` handshake."""
        if self._state != "new":
            raise LocalProtocolError("connect() was already called on this client")
        self._state = "open"
        try:
            with anyio.fail_after(self.connect_timeout):
                if self.protocol != "legacy" and await self._discover():
                    return
                await self._initialize()
        except TimeoutError as exc:
            await self._drop_idle()
            self._state = "closed"
            raise RequestTimeout(
                f"could not open an MCP session with {self.url} within {self.connect_timeout} s"
            ) from exc
        except BaseException:
            await self._drop_idle()
            self._state = "closed"
            raise

    async def _discover(self) -> bool:
        """Whether the server speaks 2026-07-28 (then it is adopted)."""
        try:
            answer = await self._post(
                self._request("server/discover", self._modern_params("server/discover", None)),
                self._modern_headers("server/discover", None),
                None,
            )
            result = self._result(answer, tool_call=False)
        except HTTPRejected as exc:
            if self.protocol == "modern" or exc.status_code in (401, 403):
                raise
            logger.debug("server/discover refused with HTTP %d: initialize", exc.status_code)
            return False
        except RPCError as exc:
            # Any JSON-RPC error (method not found, unsupported version) means "initialize".
            if self.protocol == "modern":
                raise
            logger.debug("server/discover failed (%s): initialize", exc)
            return False
        versions = result.get("supportedVersions") if isinstance(result, dict) else None
        if not isinstance(versions, list) or MODERN_PROTOCOL_VERSION not in versions:
            if self.protocol == "modern":
                raise UnsupportedProtocolVersion(str(versions))
            return False
        self.protocol_version = MODERN_PROTOCOL_VERSION
        meta = result.get("_meta")
        info = meta.get(SERVER_INFO_META) if isinstance(meta, dict) else None
        info = info if isinstance(info, dict) else {}
        capabilities = result.get("capabilities")
        instructions = result.get("instructions")
        self.server_info = ServerInfo(
            protocol_version=MODERN_PROTOCOL_VERSION,
            name=str(info.get("name", "")),
            version=str(info.get("version", "")),
            capabilities=capabilities if isinstance(capabilities, dict) else {},
            instructions=instructions if isinstance(instructions, str) else None,
        )
        return True

    async def _initialize(self) -> None:
        answer = await self._post(
            self._request("initialize", initialize_params(securemcp_version)), (), None
        )
        info = parse_initialize_result(self._result(answer, tool_call=False))
        self.session_id = answer.header("mcp-session-id")
        self.protocol_version = info.protocol_version
        self.server_info = info
        await self._post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, self._legacy_headers(), None
        )

    async def aclose(self) -> None:
        """End the session: a DELETE of it (if the server gave one), then the connections.

        Bounded by ``close_timeout``; harmless when already closed or never connected.
        """
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        try:
            if self.session_id is not None:
                with anyio.move_on_after(self.close_timeout, shield=True):
                    try:
                        await self._send("DELETE", b"", self._legacy_headers(), None)
                    except (OSError, HTTPRejected, ConnectionClosed, InternalError) as exc:
                        # 405: the server does not let clients end sessions.
                        logger.debug("DELETE of the MCP session failed: %r", exc)
        finally:
            await self._drop_idle()

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()

    # Calls

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109 - per-call timeout is the API
    ) -> Any:
        """Send any request and return its ``result`` (errors raise, as on the WebSocket client)."""
        return await self._call(method, params, timeout, tool_call=False, on_progress=None)

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109 - per-call timeout is the API
        on_progress: ProgressCallback | None = None,
    ) -> ToolResult:
        """MCP ``tools/call``: run tool ``name`` and return its :class:`ToolResult`.

        A tool's failure is a result with ``is_error`` set; protocol errors raise
        their :class:`~securemcp.errors.RPCError`. ``on_progress(update)`` receives
        the tool's progress reports in this task, before the result returns.
        """
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = dict(arguments)
        result = await self._call(
            TOOLS_CALL, params, timeout, tool_call=True, on_progress=on_progress
        )
        return parse_tool_result(result)

    async def invoke_tool(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109 - per-call timeout is the API
    ) -> Any:
        """:meth:`call_tool` then :meth:`ToolResult.value`: a failing tool raises ToolError."""
        return (await self.call_tool(name, params, timeout=timeout)).value()

    async def list_tools(
        self,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        """Every page of ``tools/list``, in the server's order."""
        tools: list[dict[str, Any]] = []
        cursor: Any = None
        seen: set[str] = set()
        while True:
            params = None if cursor is None else {"cursor": cursor}
            result = await self.request("tools/list", params, timeout=timeout)
            page = result.get("tools") if isinstance(result, dict) else None
            if not isinstance(page, list):
                raise InternalError("malformed tools/list answer: no 'tools' list")
            tools.extend(page)
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str):
                return tools
            if cursor in seen:
                raise InternalError("malformed tools/list answer: the cursor repeats")
            seen.add(cursor)

    async def ping(
        self,
        *,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109
    ) -> float:
        """A round trip, in seconds: ``ping``; 2026-07-28 has none, so ``server/discover``."""
        start = anyio.current_time()
        await self.request("server/discover" if self.stateless else "ping", None, timeout=timeout)
        return anyio.current_time() - start

    async def _call(
        self,
        method: str,
        params: Any,
        timeout: float | EllipsisType | None,  # noqa: ASYNC109
        *,
        tool_call: bool,
        on_progress: ProgressCallback | None,
    ) -> Any:
        if self._state != "open":
            raise LocalProtocolError(
                "the client is not connected: use 'async with HTTPClient(...)'"
                if self._state == "new"
                else "the client is closed"
            )
        limit = self.timeout if isinstance(timeout, EllipsisType) else timeout
        progress_token: str | None = None
        if on_progress is not None:
            progress_token = f"{CLIENT_NAME}-{next(self._tokens)}"
        if self.stateless:
            params = self._modern_params(method, params)
        if progress_token is not None:
            params = dict(params or {})
            params["_meta"] = {**params.get("_meta", {}), "progressToken": progress_token}
        message = self._request(method, params)
        progress = None if on_progress is None else (progress_token, on_progress)
        try:
            with anyio.fail_after(limit):
                answer = await self._post_in_session(message, progress)
        except TimeoutError as exc:
            await self._cancel(message["id"])
            raise RequestTimeout(f"no answer to {method!r} within {limit} s") from exc
        except anyio.get_cancelled_exc_class():
            await self._cancel(message["id"])
            raise
        return self._result(answer, tool_call=tool_call)

    async def _post_in_session(
        self, message: dict[str, Any], progress: tuple[str | None, ProgressCallback] | None
    ) -> _Answer:
        """POST a request; a 2025 session the server no longer knows is renewed once.

        The transport's rule: HTTP 404 to a request carrying ``Mcp-Session-Id``
        means the session is over, and the client starts a new one with
        ``initialize`` (the request was not run: it is sent again).
        """
        if self.stateless:
            return await self._post(
                message, self._modern_headers(message["method"], message.get("params")), progress
            )
        used = self.session_id
        answer = await self._post(message, self._legacy_headers(), progress)
        if answer.status != 404 or used is None:
            return answer
        async with self._renewing:
            if self.session_id == used:
                logger.info("the server ended MCP session %s: starting a new one", used)
                self.session_id = None
                await self._initialize()
        return await self._post(message, self._legacy_headers(), progress)

    async def _cancel(self, request_id: int) -> None:
        """The caller stopped waiting: tell a 2025-revision server to stop too.

        A 2026-07-28 client cancels by closing the response stream, done already.
        """
        if self.stateless or self._state != "open":
            return
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "the caller stopped waiting"},
        }
        with anyio.move_on_after(self.close_timeout, shield=True):
            try:
                await self._post(note, self._legacy_headers(), None)
            except (OSError, HTTPRejected, ConnectionClosed, InternalError) as exc:
                logger.debug("could not send notifications/cancelled: %r", exc)

    def _result(self, answer: _Answer, *, tool_call: bool) -> Any:
        message = answer.message
        status = answer.status
        if (
            status in (401, 403)
            or not isinstance(message, dict)
            # An HTTP error whose JSON body is no JSON-RPC answer (an OAuth error, say).
            or (status >= 400 and "error" not in message and "result" not in message)
            # The 2025 revisions: the session is over (expired, or deleted).
            or (status == 404 and self.session_id is not None and not self.stateless)
        ):
            raise HTTPRejected(status, answer.body, answer.headers)
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise error_for_code(
                code if isinstance(code, int) else -32603,
                str(error.get("message", "")),
                error.get("data"),
                tool_call=tool_call,
            )
        if "result" not in message:
            raise InternalError("malformed answer: neither 'result' nor 'error'")
        result = message["result"]
        kind = result.get("resultType") if isinstance(result, dict) else None
        if kind not in (None, "complete"):
            raise InternalError(f"unsupported resultType {kind!r}")
        return result

    # Messages and headers

    def _request(self, method: str, params: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            message["params"] = params
        return message

    @staticmethod
    def _modern_params(method: str, params: Any) -> dict[str, Any]:
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"params of {method!r} must be an object")
        out = dict(params or {})
        out["_meta"] = {
            **out.get("_meta", {}),
            PROTOCOL_VERSION_META: MODERN_PROTOCOL_VERSION,
            CLIENT_CAPABILITIES_META: {},
            CLIENT_INFO_META: {"name": CLIENT_NAME, "version": securemcp_version},
        }
        return out

    @staticmethod
    def _modern_headers(method: str, params: Any) -> tuple[tuple[str, str], ...]:
        headers = [("MCP-Protocol-Version", MODERN_PROTOCOL_VERSION), ("Mcp-Method", method)]
        key = _NAME_PARAMS.get(method)
        name = params.get(key) if key is not None and isinstance(params, Mapping) else None
        if isinstance(name, str):
            headers.append(("Mcp-Name", header_value(name)))
        return tuple(headers)

    def _legacy_headers(self) -> tuple[tuple[str, str], ...]:
        headers: list[tuple[str, str]] = []
        if self.protocol_version is not None:
            headers.append(("MCP-Protocol-Version", self.protocol_version))
        if self.session_id is not None:
            headers.append(("Mcp-Session-Id", self.session_id))
        return tuple(headers)

    # HTTP

    async def _post(
        self,
        message: dict[str, Any],
        headers: tuple[tuple[str, str], ...],
        progress: tuple[str | None, ProgressCallback] | None,
    ) -> _Answer:
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        return await self._send("POST", body, headers, progress, message.get("id"))

    async def _send(
        self,
        method: str,
        body: bytes,
        headers: tuple[tuple[str, str], ...],
        progress: tuple[str | None, ProgressCallback] | None,
        request_id: Any = None,
    ) -> _Answer:
        """One HTTP exchange; a reused connection the server had closed is replaced once."""
        while True:
            conn = await self._connection()
            try:
                return await self._exchange(conn, method, body, headers, progress, request_id)
            except _Stale:
                await conn.aclose()

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.h11.our_state is h11.IDLE:
                conn.reused = True
                return conn
            await conn.aclose()
        target = self.target
        try:
            stream: anyio.abc.ByteStream
            if self._ssl is None:
                stream = await anyio.connect_tcp(target.host, target.port)
            else:
                stream = await anyio.connect_tcp(
                    target.host,
                    target.port,
                    ssl_context=self._ssl,
                    tls_standard_compatible=False,
                )
        except OSError as exc:
            raise connect_error(exc, self.url) from None
        return _Connection(stream)

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        body: bytes,
        headers: tuple[tuple[str, str], ...],
        progress: tuple[str | None, ProgressCallback] | None,
        request_id: Any,
    ) -> _Answer:
        keep = False
        try:
            request_headers = [
                ("Host", self.target.host_header),
                ("User-Agent", f"{CLIENT_NAME}/{securemcp_version}"),
                ("Accept", "application/json, text/event-stream"),
                *self._headers,
                *headers,
            ]
            if method == "POST":
                request_headers += [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                ]
            try:
                await conn.send(
                    h11.Request(method=method, target=self.target.resource, headers=request_headers)
                )
                if body:
                    await conn.send(h11.Data(data=body))
                await conn.send(h11.EndOfMessage())
                event = await conn.next_event()
            except (OSError, anyio.BrokenResourceError, h11.RemoteProtocolError) as exc:
                if conn.received:
                    raise ConnectionClosed(None, f"HTTP protocol error: {exc}") from exc
                if conn.reused:
                    raise _Stale from exc
                raise ConnectionClosed(
                    None, "the server closed the connection without an answer"
                ) from exc
            if not isinstance(event, h11.Response):
                raise ConnectionClosed(None, "the server closed the connection without an answer")
            answer = _Answer(
                event.status_code,
                tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers),
            )
            content_type = (answer.header("content-type") or "").split(";")[0].strip().lower()
            if content_type == "text/event-stream" and event.status_code == 200:
                await self._read_events(conn, answer, progress, request_id)
            else:
                data = answer.body = await self._read_body(conn)
                if content_type == "application/json" and data:
                    try:
                        answer.message = json.loads(data)
                    except ValueError as exc:
                        raise InternalError("the server's answer is not valid JSON") from exc
                elif event.status_code >= 300:
                    raise HTTPRejected(event.status_code, data[:4096], answer.headers)
            keep = conn.reusable()
            return answer
        except h11.ProtocolError as exc:
            raise ConnectionClosed(None, f"the server cut its answer short ({exc})") from exc
        finally:
            if keep and self._state == "open":
                self._idle.append(conn)
            else:
                await conn.aclose()

    async def _read_body(self, conn: _Connection) -> bytes:
        chunks = bytearray()
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.Data):
                chunks += event.data
                if len(chunks) > self.max_message_size:
                    raise InternalError(
                        f"the server's answer exceeds {self.max_message_size} bytes"
                    )
            elif isinstance(event, h11.EndOfMessage):
                return bytes(chunks)
            else:
                raise ConnectionClosed(None, "the server cut its answer short")

    async def _read_events(
        self,
        conn: _Connection,
        answer: _Answer,
        progress: tuple[str | None, ProgressCallback] | None,
        request_id: Any,
    ) -> None:
        """Read an event stream to its end: the answer, and notifications on the way."""
        parser = SSEParser(self.max_message_size)
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                break
            if not isinstance(event, h11.Data):
                raise ConnectionClosed(None, "the server cut its event stream short")
            for data in parser.feed(event.data):
                try:
                    message = json.loads(data)
                except ValueError as exc:
                    raise InternalError("an event of the server's stream is not JSON") from exc
                if not isinstance(message, dict):
                    continue
                if "method" not in message and message.get("id") == request_id:
                    answer.message = message
                elif "method" in message and "id" not in message:
                    await self._notified(message.get("method"), message.get("params"), progress)
                else:
                    logger.debug("ignored a message on an event stream: %.200r", message)
            if answer.message is not None and request_id is not None:
                # The answer is in: the server ends the stream now; don't wait for it.
                break
        if answer.message is None and request_id is not None:
            raise ConnectionClosed(None, "the event stream ended without an answer")

    async def _notified(
        self, method: Any, params: Any, progress: tuple[str | None, ProgressCallback] | None
    ) -> None:
        if method == "notifications/progress" and progress is not None:
            parsed = parse_progress(params)
            if parsed is not None and parsed[0] == progress[0]:
                outcome = progress[1](parsed[1])
                if outcome is not None:
                    await outcome
                return
        handler = self._on_notification
        if handler is None:
            logger.debug("dropped notification %r (no on_notification)", method)
            return
        try:
            outcome2 = handler(str(method), params)
            if outcome2 is not None:
                await outcome2
        except Exception:
            logger.exception("on_notification raised for %r", method)


class _Stale(Exception):
    """A reused keep-alive connection turned out closed before any answer: retry anew."""
