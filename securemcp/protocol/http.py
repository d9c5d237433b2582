"""Plain HTTP/1.1 requests on a server connection: bodies, keep-alive, JSON and SSE answers.

:class:`HTTPServerConnection` is sans-I/O, on h11: feed it bytes
(``receive_data``/``receive_eof``), act on ``events_received()``, write
``data_to_send()``. Each request, body and all, becomes one
:class:`HTTPRequestReceived`; answer it with :meth:`~HTTPServerConnection.respond`
(a whole body) or an SSE stream (:meth:`~HTTPServerConnection.start_stream`,
:meth:`~HTTPServerConnection.send_event`, :meth:`~HTTPServerConnection.end_stream`).
Requests are answered one at a time and in order: bytes of pipelined requests
wait, unparsed, until the one before is answered, and until the answers
before them are down to ``Limits.max_pending_output`` unsent bytes. A peer that goes away while
a request is unanswered or its stream is open is reported as
:class:`HTTPAborted`, so that the caller can cancel the work.

Nothing here knows MCP: routing by path, sessions and status choices are the
caller's. The peer's faults get their status here and the connection closes:
400 (malformed), 405 (method not served, with ``Allow``), 413 (a body past
``Limits.max_http_body``, counted as it arrives), 431 (a head past
``max_handshake_size`` or ``max_header_count``), 501 (unknown transfer coding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus

import h11

from ..errors import LocalProtocolError
from .events import Event
from .limits import Limits
from .output import Output

__all__ = ["HTTPAborted", "HTTPRequestReceived", "HTTPServerConnection"]

_FEED = 16 * 1024
"""Bytes handed to h11 at a time, so that its buffer never holds much past what is parsed."""

_FRAMING = (b"content-length", b"transfer-encoding", b"connection")


@dataclass(frozen=True, slots=True)
class HTTPRequestReceived(Event):
    """A complete HTTP request, body included; answer it before the next comes."""

    method: str
    path: str
    """The request target, query string included."""
    headers: tuple[tuple[str, str], ...]
    """Every request header as (lower-case name, value), in order."""
    body: bytes
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


@dataclass(frozen=True, slots=True)
class HTTPAborted(Event):
    """The peer went away before the answer to its request was complete: cancel the work."""

    reason: str


class _Phase(Enum):
    READING = "reading"  # reading a request (or waiting for one)
    ANSWERING = "answering"  # a request was delivered; its answer has not started
    STREAMING = "streaming"  # an SSE answer is open
    CLOSED = "closed"


class HTTPServerConnection:
    """The sans-I/O server side of an HTTP/1.1 connection of plain (non-upgrade) requests.

    ``methods`` are the methods served; others get 405. ``output`` and ``emit``
    let a :class:`~securemcp.protocol.ServerConnection` share its output buffer
    and event list; ``on_close(lost)`` is told when the connection ends
    (``lost``: the peer went away, rather than a clean end). ``on_hold()`` is
    told when input waits because ``Limits.max_pending_output`` bytes of answers
    are unsent: the owner of the buffer then calls :meth:`resume` once it drained.
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_eof",
        "_eof_fed",
        "_events",
        "_h11",
        "_held",
        "_offset",
        "_on_close",
        "_on_hold",
        "_output",
        "_pending",
        "_phase",
        "_request",
        "emit",
        "limits",
        "methods",
        "requests",
    )

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        methods: Iterable[str] = ("GET", "POST", "DELETE"),
        output: Output | None = None,
        emit: Callable[[Event], None] | None = None,
        on_close: Callable[[bool], None] | None = None,
        on_hold: Callable[[], None] | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self.methods = tuple(method.upper() for method in methods)
        self._h11: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_handshake_size
        )
        self._output = output if output is not None else Output()
        self._events: list[Event] = []
        self.emit: Callable[[Event], None] = emit if emit is not None else self._queue
        self._on_close = on_close
        self._on_hold = on_hold
        # Input waits until the answers before it are taken (see _pump).
        self._held = False
        self._phase = _Phase.READING
        # Input not yet given to h11: pipelined requests while one is answered.
        self._pending = b""
        self._offset = 0
        self._eof = False
        self._eof_fed = False
        self._request: h11.Request | None = None
        # One buffer, not a list of pieces: a body sent in 1-byte chunks would
        # otherwise cost an object (some 40 bytes) per byte.
        self._body = bytearray()
        self._body_size = 0
        self.requests = 0
        """Requests answered (or being answered) on this connection."""

    # The driver's interface

    @property
    def closed(self) -> bool:
        """Whether the connection is over: flush ``data_to_send()``, then close the socket."""
        return self._phase is _Phase.CLOSED

    @property
    def answering(self) -> bool:
        """Whether a request awaits its answer (or its stream's end)."""
        return self._phase is _Phase.ANSWERING or self._phase is _Phase.STREAMING

    @property
    def buffered(self) -> int:
        """Bytes received and held unparsed (pipelined requests)."""
        return len(self._pending) - self._offset

    @property
    def wants_read(self) -> bool:
        """Whether to read more: false once ``Limits.max_http_pipelined`` bytes are held.

        Reading on while a request is answered is what tells a vanished peer
        (:class:`HTTPAborted`), so reading stops only when pipelined bytes pile up.
        """
        return self._phase is not _Phase.CLOSED and self.buffered < self.limits.max_http_pipelined

    @property
    def pending_output(self) -> int:
        """Bytes waiting in ``data_to_send()``."""
        return self._output.size

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket. A peer's violation never raises here."""
        if self._phase is _Phase.CLOSED or not data:
            return
        if self._offset:
            self._pending = self._pending[self._offset :] + data
            self._offset = 0
        else:
            self._pending += data
        self._pump()

    def receive_eof(self) -> None:
        """The peer closed its side of the socket (or the backend gave up on it)."""
        if self._phase is _Phase.CLOSED:
            return
        if self.answering:
            self.emit(HTTPAborted("connection lost before the answer was complete"))
            self._close(lost=True)
            return
        self._eof = True
        self._pump()

    def events_received(self) -> list[Event]:
        """The events produced since the last call, oldest first (standalone use)."""
        events = self._events
        if events:
            self._events = []
        return events

    def _queue(self, event: Event) -> None:
        self._events.append(event)

    def data_to_send(self) -> bytes:
        """The bytes to write to the socket, in order; empty when there is nothing."""
        data = self._output.take()
        if data and self._held:
            self.resume()
        return data

    def resume(self) -> None:
        """Parse the input held while unsent answers were over ``max_pending_output``."""
        if self._held:
            self._held = False
            self._pump()

    def close(self) -> None:
        """Drop the connection (the backend is shutting down); nothing more is sent."""
        if self._phase is not _Phase.CLOSED:
            self._close(lost=False)

    # Answers

    def respond_last(
        self, status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """:meth:`respond`, as the connection's last answer (``Connection: close``), then close."""
        # Counted as the last request: _headers then says close, and h11 ends the connection.
        self.requests = max(self.requests, self.limits.max_http_requests)
        self.respond(status, body, headers)

    def respond(
        self, status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer the request with ``status``, ``headers`` and a whole ``body``.

        ``Content-Length`` is set (framing headers given are dropped);
        ``Content-Type`` defaults to ``application/json`` when there is a body.
        """
        self._require(_Phase.ANSWERING, "respond")
        if status < 200:
            raise LocalProtocolError(f"respond() needs a final status, not {status}")
        payload = body.encode() if isinstance(body, str) else body
        if payload and status in (204, 304):
            raise LocalProtocolError(f"a {status} answer has no body")
        pairs = self._headers(headers, "application/json" if payload else None)
        if status not in (204, 304):  # RFC 9110 8.6: no Content-Length on a 204
            pairs.append((b"content-length", str(len(payload)).encode()))
        conn = self._h11
        assert conn is not None
        self._send(h11.Response(status_code=status, headers=pairs, reason=_reason(status)))
        if payload and self._request is not None and self._request.method != b"HEAD":
            self._send(h11.Data(data=payload))
        self._send(h11.EndOfMessage())
        self._answered()

    def start_stream(self, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Start an SSE answer (``text/event-stream``, chunked); then :meth:`send_event`."""
        self._require(_Phase.ANSWERING, "start_stream")
        pairs = self._headers(headers, "text/event-stream")
        if not any(name == b"cache-control" for name, _ in pairs):
            pairs.append((b"cache-control", b"no-cache"))
        self._send(h11.Response(status_code=status, headers=pairs, reason=_reason(status)))
        self._phase = _Phase.STREAMING

    def send_event(
        self, data: bytes | str, *, event: str | None = None, event_id: str | None = None
    ) -> bool:
        """Send one SSE event (``data: ...`` lines, a blank line); ``False`` if it cannot go out."""
        if self._phase is _Phase.CLOSED:
            return False
        self._require(_Phase.STREAMING, "send_event")
        text = data.decode() if isinstance(data, bytes) else data
        lines = []
        if event is not None:
            lines.append(f"event: {_one_line(event)}\n")
        if event_id is not None:
            lines.append(f"id: {_one_line(event_id)}\n")
        lines.extend(f"data: {line}\n" for line in text.replace("\r\n", "\n").split("\n"))
        lines.append("\n")
        self._send(h11.Data(data="".join(lines).encode()))
        return True

    def end_stream(self) -> None:
        """End the SSE answer; the connection then serves the next request (or closes)."""
        if self._phase is _Phase.CLOSED:
            return
        self._require(_Phase.STREAMING, "end_stream")
        self._send(h11.EndOfMessage())
        self._answered()

    # Internals

    def _require(self, phase: _Phase, what: str) -> None:
        if self._phase is not phase:
            raise LocalProtocolError(
                f"{what}() is not valid now (the connection is {self._phase.value})"
            )

    def _headers(
        self, headers: Iterable[tuple[str, str]], content_type: str | None
    ) -> list[tuple[bytes, bytes]]:
        pairs = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers
            if name.lower().encode("latin-1") not in _FRAMING
        ]
        if content_type is not None and not any(name == b"content-type" for name, _ in pairs):
            pairs.append((b"content-type", content_type.encode("latin-1")))
        if self.requests >= self.limits.max_http_requests:
            pairs.append((b"connection", b"close"))  # the last request this connection serves
        return pairs

    def _send(self, event: h11.Event) -> None:
        conn = self._h11
        assert conn is not None
        data = conn.send(event)
        if data:
            self._output.append(data)

    def _answered(self) -> None:
        conn = self._h11
        assert conn is not None
        self._request = None
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            self._close(lost=False)  # MUST_CLOSE: Connection: close, HTTP/1.0, the last request
            return
        conn.start_next_cycle()
        self._phase = _Phase.READING
        self._pump()

    def _close(self, *, lost: bool) -> None:
        self._phase = _Phase.CLOSED
        self._h11 = None
        self._pending = b""
        self._offset = 0
        self._body = bytearray()
        self._request = None
        if self._on_close is not None:
            self._on_close(lost)

    def _fail(self, status: int, message: str, allow: str | None = None) -> None:
        """Answer a peer's fault with ``status`` and close (the request's rest goes unread)."""
        phrase = _reason(status).decode()
        body = f"{phrase}: {message}\n".encode()
        head = [
            f"HTTP/1.1 {status} {phrase}",
            "content-type: text/plain; charset=utf-8",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if allow is not None:
            head.append(f"allow: {allow}")
        if self._request is not None and self._request.method == b"HEAD":
            body = b""
        self._output.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self._close(lost=False)

    def _pump(self) -> None:
        """Parse what is held while a request is being read; stop at its end."""
        if self._output.size >= self.limits.max_pending_output and self._phase is _Phase.READING:
            # A peer that does not read its answers gets no more of them: its
            # requests wait (and reading stops) until the output drains.
            self._held = True
            if self._on_hold is not None:
                self._on_hold()
            return
        while self._phase is _Phase.READING:
            conn = self._h11
            assert conn is not None
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self._eof:
                    self._close(lost=True)  # cut off mid-request: nobody to answer
                else:
                    self._fail(_error_status(exc.error_status_hint), str(exc))
                return
            if event is h11.NEED_DATA:
                if self._offset < len(self._pending):
                    end = self._offset + _FEED
                    conn.receive_data(self._pending[self._offset : end])
                    self._offset = min(end, len(self._pending))
                    if self._offset == len(self._pending):
                        self._pending, self._offset = b"", 0
                elif self._eof and not self._eof_fed:
                    self._eof_fed = True
                    conn.receive_data(b"")
                else:
                    if self._eof:  # pragma: no cover - h11 ends or raises once told of the EOF
                        self._close(lost=False)
                    return
            elif isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > self.limits.max_http_body:
                    self._fail(413, f"the body exceeds {self.limits.max_http_body} bytes")
                    return
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._deliver()
            elif isinstance(event, h11.ConnectionClosed):
                self._close(lost=False)  # the peer closed between requests
            else:  # pragma: no cover - PAUSED cannot happen while a request is read
                return

    def _on_request(self, request: h11.Request) -> None:
        limits = self.limits
        size = len(request.method) + len(request.target) + 12
        size += sum(len(name) + len(value) + 4 for name, value in request.headers)
        if len(request.headers) > limits.max_header_count:
            self._fail(431, f"more than {limits.max_header_count} headers")
            return
        if size > limits.max_handshake_size:
            self._fail(431, f"the head exceeds {limits.max_handshake_size} bytes")
            return
        self._request = request
        self._body, self._body_size = bytearray(), 0
        method = request.method.decode("ascii", "replace")
        if method not in self.methods:
            self._fail(405, f"{method} is not served", allow=", ".join(self.methods))
            return
        length = next((value for name, value in request.headers if name == b"content-length"), None)
        if length is not None and int(length) > limits.max_http_body:
            self._fail(413, f"the body exceeds {limits.max_http_body} bytes")
            return
        conn = self._h11
        assert conn is not None
        if conn.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))

    def _deliver(self) -> None:
        request = self._request
        assert request is not None
        body = bytes(self._body)
        self._body, self._body_size = bytearray(), 0
        self.requests += 1
        self._phase = _Phase.ANSWERING
        self.emit(
            HTTPRequestReceived(
                method=request.method.decode("ascii"),
                path=request.target.decode("latin-1"),
                headers=tuple(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in request.headers
                ),
                body=body,
                http_version=request.http_version.decode("ascii"),
            )
        )


def _error_status(hint: int) -> int:
    # h11 hints 400, 431 (head too long) or 501 (unknown transfer coding).
    return hint if hint in (400, 413, 431, 501) else 400


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")
