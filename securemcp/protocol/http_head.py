"""Reading one request head with h11's head reader, without an ``h11.Connection`` per request.

:class:`~securemcp.protocol.http.HTTPServerConnection` needs h11 for one thing
per request with a ``Content-Length`` body: the head. Through an
``h11.Connection`` that costs the connection object and its state machine on
top of the parse, 28% of h11's work on an M3 request (66k of 240k
instructions, ``benchmarks/http_cost.py``), none of it needed for a request
whose body is then taken by its length. :class:`HeadReader` runs the very
function the connection would run from its IDLE state
(``h11._readers.maybe_read_from_IDLE_client``, over an ``h11`` receive buffer)
and does what the connection does around it: its errors become
:class:`h11.RemoteProtocolError` with h11's status hint, an incomplete head
past the size limit is refused with 431, an end of input mid-head is an error
and between requests a ``ConnectionClosed``. The parse, and every check of the
request line and the headers, stay h11's.

Both are private names of h11, so they are used only on the h11 releases
``tests/test_http_head.py`` has held them to: there the reader and a public
``h11.Connection`` give the same answers, byte for byte. On any other h11
(``FAST`` false) every head goes through a public ``h11.Connection``, slower
and as correct; ``pyproject.toml`` keeps h11 below the next minor release.

A chunked body is read by h11's connection as before: :meth:`HeadReader.connection`
hands over an ``h11.Connection`` that has read the same head.
"""

from __future__ import annotations

import h11

VERIFIED = ("0.16.",)
"""The h11 releases (version prefixes) the reader has been tested against."""

try:
    from h11._headers import has_expect_100_continue
    from h11._readers import maybe_read_from_IDLE_client
    from h11._receivebuffer import ReceiveBuffer
except ImportError:  # pragma: no cover - an h11 without them: the public parser does it all
    _HAS_READER = False
else:
    _HAS_READER = True

FAST = _HAS_READER and getattr(h11, "__version__", "").startswith(VERIFIED)
"""Whether :func:`parser` gives a :class:`HeadReader` (else a public ``h11.Connection``)."""

__all__ = ["FAST", "VERIFIED", "HeadReader", "parser"]


class HeadReader:
    """What an ``h11.Connection`` in its IDLE state does with a request head, and no more.

    It answers the part of the connection's interface that
    :class:`~securemcp.protocol.http.HTTPServerConnection` uses while reading a
    head: ``receive_data``, ``next_event`` (the :class:`h11.Request`,
    ``NEED_DATA`` or ``ConnectionClosed``), ``trailing_data`` and
    ``they_are_waiting_for_100_continue``.
    """

    __slots__ = ("_buffer", "_closed", "_fed", "_limit", "_request")

    def __init__(self, max_incomplete_event_size: int) -> None:
        self._limit = max_incomplete_event_size
        self._buffer = ReceiveBuffer()
        # Everything received, for connection(): the first piece as it came, more in one
        # bytearray (a piece per read, as a slowloris sends them, would cost an object each).
        self._fed: bytes | bytearray = b""
        self._closed = False
        self._request: h11.Request | None = None

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` for the end of its input."""
        if data:
            self._buffer += data
            fed = self._fed
            if not fed:
                self._fed = data
            elif type(fed) is bytearray:
                fed += data
            else:
                self._fed = bytearray(fed) + data
        else:
            self._closed = True

    def next_event(self) -> h11.Request | type[h11.NEED_DATA] | h11.ConnectionClosed:
        """The request once its head is whole; raises :class:`h11.RemoteProtocolError`."""
        buffer = self._buffer
        try:
            request = maybe_read_from_IDLE_client(buffer)
        except h11.LocalProtocolError as exc:
            # What h11.Connection.next_event does with its reader's errors.
            hint = exc.error_status_hint
            raise h11.RemoteProtocolError(str(exc), error_status_hint=hint) from None
        if request is not None:
            self._request = request
            return request
        if self._closed and not buffer:
            return h11.ConnectionClosed()
        if len(buffer) > self._limit:
            raise h11.RemoteProtocolError("Receive buffer too long", error_status_hint=431)
        if self._closed:
            raise h11.RemoteProtocolError("peer unexpectedly closed connection")
        return h11.NEED_DATA

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """What came after the head, and whether the input has ended."""
        return bytes(self._buffer), self._closed

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        """Whether the request read asks for ``100 Continue`` before its body."""
        return self._request is not None and has_expect_100_continue(self._request)

    def connection(self) -> h11.Connection:
        """An ``h11.Connection`` that has read this head, to read a chunked body on."""
        conn = _connection(self._limit)
        conn.receive_data(bytes(self._fed))
        if self._closed:
            conn.receive_data(b"")
        event = conn.next_event()
        # The same reader over the same bytes: the same request.
        assert type(event) is h11.Request, event
        return conn


def parser(max_incomplete_event_size: int) -> HeadReader | h11.Connection:
    """The parser of the next request's head: a :class:`HeadReader` where h11 allows it."""
    if FAST:
        return HeadReader(max_incomplete_event_size)
    return _connection(max_incomplete_event_size)


def _connection(max_incomplete_event_size: int) -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
