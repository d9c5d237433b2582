"""HTTP/1.1 for :class:`~securemcp.backends.http_client.HTTPClient`: h11 over anyio streams.

:class:`HTTPTransport` makes one exchange per request on a connection of its
own: it sends the request, then reads the answer as one JSON body or as a
``text/event-stream`` scoped to the request, handing the stream's
notifications to the caller on the way. What the messages mean (sessions,
revisions, error answers) is the client's.

h11 is installed already (wsproto is built on it), it keeps the client's I/O
on anyio like the WebSocket client, and it adds no dependency. Idle keep-alive
connections are kept for reuse; a request that finds its reused connection
closed by the server before any byte of the answer is sent again on a new one.
"""

from __future__ import annotations

import json
import logging
import re
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.abc
import h11

from securemcp import __version__ as securemcp_version
from securemcp.errors import ConnectionClosed, HandshakeRejected, InternalError

from ._client_target import connect_error, header_pairs, parse_http_url, tls_context, with_token
from .mcp_client import CLIENT_NAME

__all__ = ["Answer", "HTTPRejected", "HTTPTransport", "Headers", "Listener", "SSEParser"]

logger = logging.getLogger("securemcp.client")

_LINE_END = re.compile(rb"\r\n|\r|\n")
_READ_SIZE = 65536

Headers = tuple[tuple[str, str], ...]
"""HTTP headers as (name, value) pairs."""

Listener = Callable[[Any, Any], Awaitable[None]]
"""``listener(method, params)`` for each notification an answer's event stream carries."""


class HTTPRejected(HandshakeRejected):
    """The server answered with an HTTP status instead of a JSON-RPC answer (401, 403, 404...)."""

    def __init__(self, status_code: int, body: bytes = b"", headers: Headers = ()) -> None:
        super().__init__(status_code, body, headers)
        self.args = (f"HTTP request rejected with HTTP {status_code}",)


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


class Answer:
    """What came back for one request, as :meth:`HTTPTransport.send` read it."""

    def __init__(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        self.message: Any = None
        self.body = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (lower case), if the answer has it."""
        return next((value for key, value in self.headers if key == name), None)


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


class _Stale(Exception):
    """A reused keep-alive connection turned out closed before any answer: retry anew."""


class HTTPTransport:
    """HTTP/1.1 exchanges with the server at ``url``, over keep-alive connections.

    ``headers`` (and ``token``, as ``Authorization: Bearer``) go with every
    request; ``ssl`` is :class:`~securemcp.transport.HTTPClient`'s parameter.
    A URL, header or token that cannot be sent raises :class:`ValueError`.

    Errors: the :class:`OSError` of a failed TCP connect; :class:`HTTPRejected`
    for an HTTP status without a JSON body; :class:`~securemcp.errors.InternalError`
    for an answer that is no JSON or too large;
    :class:`~securemcp.errors.ConnectionClosed` when the server cut an answer short.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        token: str | None,
        ssl: ssl_module.SSLContext | bool | None,
        max_message_size: int,
    ) -> None:
        self.url = url
        self.target = parse_http_url(url)
        self._ssl = tls_context(self.target, ssl)
        extra = header_pairs(headers)
        if token is not None:
            extra, _ = with_token(token, False, extra, ())
        self._headers = extra
        self.max_message_size = max_message_size
        self._idle: list[_Connection] = []
        self._reuse = True

    async def post(self, message: dict[str, Any], headers: Headers, listener: Listener) -> Answer:
        """POST one JSON-RPC message; the answer to its ``id`` (if it has one)."""
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        return await self.send("POST", body, headers, listener, message.get("id"))

    async def send(
        self,
        method: str,
        body: bytes,
        headers: Headers,
        listener: Listener,
        request_id: Any = None,
    ) -> Answer:
        """One HTTP exchange; a reused connection the server had closed is replaced once."""
        while True:
            conn = await self._connection()
            try:
                return await self._exchange(conn, method, body, headers, listener, request_id)
            except _Stale:
                await conn.aclose()

    def retire(self) -> None:
        """Keep no connection for reuse from now on: each closes after its exchange."""
        self._reuse = False

    async def aclose(self) -> None:
        """:meth:`retire`, and close the idle connections."""
        self._reuse = False
        idle, self._idle = self._idle, []
        for conn in idle:
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
        headers: Headers,
        listener: Listener,
        request_id: Any,
    ) -> Answer:
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
            answer = Answer(
                event.status_code,
                tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers),
            )
            content_type = (answer.header("content-type") or "").split(";")[0].strip().lower()
            if content_type == "text/event-stream" and event.status_code == 200:
                await self._read_events(conn, answer, listener, request_id)
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
            if keep and self._reuse:
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
        self, conn: _Connection, answer: Answer, listener: Listener, request_id: Any
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
                    await listener(message.get("method"), message.get("params"))
                else:
                    logger.debug("ignored a message on an event stream: %.200r", message)
            if answer.message is not None and request_id is not None:
                # The answer is in: the server ends the stream now; don't wait for it.
                break
        if answer.message is None and request_id is not None:
            raise ConnectionClosed(None, "the event stream ended without an answer")
