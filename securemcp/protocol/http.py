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

import h11

from . import http_write
from .events import Event
from .http_answer import Answers, Phase
from .http_events import HTTPAborted, HTTPRequestReceived, framing
from .http_head import HeadReader, parser
from .limits import Limits
from .output import Output

__all__ = ["HTTPAborted", "HTTPRequestReceived", "HTTPServerConnection"]

_FEED = 16 * 1024
"""Bytes handed to h11 at a time, so that its buffer never holds much past what is parsed."""


class HTTPServerConnection(Answers):
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
        "_body_left",
        "_body_size",
        "_eof",
        "_eof_fed",
        "_events",
        "_h11",
        "_headers",
        "_held",
        "_offset",
        "_on_close",
        "_on_hold",
        "_pending",
        "emit",
        "methods",
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
        # One parser per request (see http_head): it parses that request's
        # head, and what follows it is taken back (``trailing_data``) for the
        # next one's. The answer is written by http_write, so h11 never sees it.
        self._h11: HeadReader | h11.Connection | None = self._parser()
        self._output = output if output is not None else Output()
        self._events: list[Event] = []
        self.emit: Callable[[Event], None] = emit if emit is not None else self._queue
        self._on_close = on_close
        self._on_hold = on_hold
        # Input waits until the answers before it are taken (see _pump).
        self._held = False
        self._phase = Phase.READING
        # Input not yet given to h11: pipelined requests while one is answered.
        self._pending = b""
        self._offset = 0
        self._eof = False
        self._eof_fed = False
        self._request: h11.Request | None = None
        self._headers: tuple[tuple[str, str], ...] = ()
        # At most one piece: see _keep.
        self._body: list[bytes | bytearray] = []
        self._body_size = 0
        self._body_left = 0
        self._keep_alive = True
        self._chunked = False
        self.requests = 0
        """Requests answered (or being answered) on this connection."""

    # The driver's interface

    @property
    def closed(self) -> bool:
        """Whether the connection is over: flush ``data_to_send()``, then close the socket."""
        return self._phase is Phase.CLOSED

    @property
    def answering(self) -> bool:
        """Whether a request awaits its answer (or its stream's end)."""
        return self._phase is Phase.ANSWERING or self._phase is Phase.STREAMING

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
        return self._phase is not Phase.CLOSED and self.buffered < self.limits.max_http_pipelined

    @property
    def pending_output(self) -> int:
        """Bytes waiting in ``data_to_send()``."""
        return self._output.size

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket. A peer's violation never raises here."""
        if self._phase is Phase.CLOSED or not data:
            return
        if self._offset:
            self._pending = self._pending[self._offset :] + data
            self._offset = 0
        else:
            self._pending += data
        self._pump()

    def receive_eof(self) -> None:
        """The peer closed its side of the socket (or the backend gave up on it)."""
        if self._phase is Phase.CLOSED:
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
        if self._phase is not Phase.CLOSED:
            self._close(lost=False)

    # Internals

    def _parser(self) -> HeadReader | h11.Connection:
        return parser(self.limits.max_handshake_size)

    def _answered(self) -> None:
        self._request = None
        if not self._keep_alive or (self._phase is Phase.STREAMING and not self._chunked):
            self._close(lost=False)  # Connection: close, HTTP/1.0, the last request
            return
        self._h11 = self._parser()
        self._phase = Phase.READING
        self._pump()

    def _close(self, *, lost: bool) -> None:
        self._phase = Phase.CLOSED
        self._h11 = None
        self._pending = b""
        self._offset = 0
        self._body = []
        self._request = None
        if self._on_close is not None:
            self._on_close(lost)

    def _fail(self, status: int, message: str, allow: str | None = None) -> None:
        """Answer a peer's fault with ``status`` and close (the request's rest goes unread)."""
        body = f"{http_write.reason(status)}: {message}\n".encode()
        headers = () if allow is None else (("allow", allow),)
        self._output.append(
            http_write.closing_answer(status, body, headers, to_head=self._is_head())
        )
        self._close(lost=False)

    def _feed(self, conn: HeadReader | h11.Connection) -> bool:
        """Give h11 the next held bytes (or the EOF); ``False`` when there is nothing to give."""
        if self._offset < len(self._pending):
            end = self._offset + _FEED
            conn.receive_data(self._pending[self._offset : end])
            self._offset = min(end, len(self._pending))
            if self._offset == len(self._pending):
                self._pending, self._offset = b"", 0
            return True
        if self._eof and not self._eof_fed:
            self._eof_fed = True
            conn.receive_data(b"")
            return True
        return False

    def _pump(self) -> None:
        """Parse what is held while a request is being read; stop at its end."""
        if self._output.size >= self.limits.max_pending_output and self._phase is Phase.READING:
            # A peer that does not read its answers gets no more of them: its
            # requests wait (and reading stops) until the output drains.
            self._held = True
            if self._on_hold is not None:
                self._on_hold()
            return
        if self._phase is Phase.BODY and not self._read_body():
            return
        # Reading, h11 has asked for data (or is new): feed it before asking
        # again; with nothing to feed, asking would only hear NEED_DATA.
        if self._phase is Phase.READING:
            assert self._h11 is not None
            if not self._feed(self._h11):
                return
        while self._phase is Phase.READING:
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
            kind = type(event)
            if event is h11.NEED_DATA:
                if not self._feed(conn):
                    if self._eof:  # pragma: no cover - h11 ends or raises once told of the EOF
                        self._close(lost=False)
                    return
            elif kind is h11.Data:
                data = event.data  # type: ignore[union-attr]
                self._body_size += len(data)
                if self._body_size > self.limits.max_http_body:
                    self._fail(413, f"the body exceeds {self.limits.max_http_body} bytes")
                    return
                self._keep(data)
            elif kind is h11.Request:
                if self._on_request(event) and not self._read_body():  # type: ignore[arg-type]
                    return
            elif kind is h11.EndOfMessage:
                self._deliver()
            elif kind is h11.ConnectionClosed:
                self._close(lost=False)  # the peer closed between requests
            else:  # pragma: no cover - PAUSED cannot happen while a request is read
                return

    def _on_request(self, request: h11.Request) -> bool:
        """Check a request's head; ``True`` if its body is then read by its length here."""
        limits = self.limits
        raw = request.headers.raw_items()  # a list: iterating h11's Headers is slow
        if len(raw) > limits.max_header_count:
            self._fail(431, f"more than {limits.max_header_count} headers")
            return False
        size = len(request.method) + len(request.target) + 12
        headers = []
        for name, value in raw:
            size += len(name) + len(value) + 4
            headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))
        if size > limits.max_handshake_size:
            self._fail(431, f"the head exceeds {limits.max_handshake_size} bytes")
            return False
        self._request = request
        self._headers = tuple(headers)
        self._body, self._body_size = [], 0
        method = request.method.decode("ascii", "replace")
        if method not in self.methods:
            self._fail(405, f"{method} is not served", allow=", ".join(self.methods))
            return False
        try:
            length, chunked, self._keep_alive = framing(self._headers, request.http_version)
        except ValueError as exc:
            self._fail(400, str(exc))
            return False
        if length > limits.max_http_body:
            self._fail(413, f"the body exceeds {limits.max_http_body} bytes")
            return False
        conn = self._h11
        assert conn is not None
        if conn.they_are_waiting_for_100_continue:
            self._output.append(http_write.CONTINUE)
        if chunked:
            # h11's connection reads the chunks (Data events) up to EndOfMessage.
            if type(conn) is HeadReader:
                self._h11 = conn.connection()
            return False
        # h11 parsed and checked the head, Content-Length included; the body is
        # then just that many bytes, taken here: two h11 events less a request.
        self._take_back(conn)
        self._h11 = None
        self._body_left = length
        self._phase = Phase.BODY
        return True

    def _read_body(self) -> bool:
        """Take what is held of a Content-Length body; ``True`` once it is whole and delivered."""
        held = len(self._pending) - self._offset
        if held:
            take = min(self._body_left, held)
            if take:
                self._keep(self._pending[self._offset : self._offset + take])
                self._offset += take
                self._body_left -= take
            if self._offset == len(self._pending):
                self._pending, self._offset = b"", 0
        if self._body_left == 0:
            self._deliver()
            return True
        if self._eof:
            self._close(lost=True)  # cut off mid-body: nobody to answer
        return False

    def _keep(self, data: bytes | bytearray) -> None:
        """Add ``data`` to the body: the first piece as it came, more into one bytearray.

        One buffer, however small the pieces (1-byte chunks, a body read a
        byte at a time): a list of them would cost some 40 bytes per piece.
        """
        body = self._body
        if not body:
            body.append(data)
        elif type(body[0]) is bytearray:
            body[0] += data
        else:
            body[0] = bytearray(body[0]) + data

    def _take_back(self, conn: HeadReader | h11.Connection) -> None:
        """What h11 was given past the request goes back in front of what it was not."""
        trailing, _ = conn.trailing_data
        if trailing:
            self._pending = trailing + self._pending[self._offset :]
            self._offset = 0

    def _deliver(self) -> None:
        request = self._request
        assert request is not None
        body = b"".join(self._body)
        self._body, self._body_size = [], 0
        if self._h11 is not None:  # a chunked body: h11 read it
            self._take_back(self._h11)
        self._eof_fed = False  # the next request's parser must hear of an EOF too
        self._h11 = None
        self.requests += 1
        self._phase = Phase.ANSWERING
        self.emit(
            HTTPRequestReceived(
                method=request.method.decode("ascii"),
                path=request.target.decode("latin-1"),
                headers=self._headers,
                body=body,
                http_version=request.http_version.decode("ascii"),
            )
        )


def _error_status(hint: int) -> int:
    # h11 hints 400, 431 (head too long) or 501 (unknown transfer coding).
    return hint if hint in (400, 413, 431, 501) else 400
