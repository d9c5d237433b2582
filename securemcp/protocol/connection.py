"""What server and client connections share: WebSocket framing, limits and closing.

Bytes go in through ``receive_data``/``receive_eof``; events come out of
``events_received()`` and bytes to write out of ``data_to_send()``. Nothing
here blocks, reads a clock or touches a socket.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState as WSState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Event as WSEvent
from wsproto.extensions import Extension
from wsproto.utilities import RemoteProtocolError

from ..errors import LocalProtocolError
from . import jsonrpc
from .deflate import BoundedPerMessageDeflate
from .events import ConnectionClosed, Event, PongReceived
from .limits import Limits

__all__ = ["CloseCode", "ConnectionState", "HandshakeTooLarge"]

# The end of an HTTP head as h11 finds it: a line feed, an optional carriage
# return, a line feed.
_END_OF_HEAD = re.compile(b"\n\r?\n")


class HandshakeTooLarge(RemoteProtocolError):
    """The peer's handshake head passed ``Limits.max_handshake_size`` or ``max_header_count``.

    A server answers it with HTTP 431 (Request Header Fields Too Large).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, event_hint=RejectConnection(status_code=431))


class ConnectionState(Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    """Opening handshake in progress."""
    OPEN = "open"
    """Messages flow both ways."""
    CLOSING = "closing"
    """A close frame was sent; waiting for the peer's (``close_expected()`` is true)."""
    CLOSED = "closed"
    """Over: the backend should flush ``data_to_send()`` and close the socket."""


class CloseCode:
    """WebSocket close codes SecureMCP uses (RFC 6455 §7.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class _Endpoint:
    """Common machinery of :class:`ServerConnection` and :class:`ClientConnection`."""

    def __init__(self, role: ConnectionType, limits: Limits | None) -> None:
        self.limits = limits if limits is not None else Limits()
        self._ws = WSConnection(role)
        self._state = ConnectionState.CONNECTING
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._outgoing_size = 0
        self._fragments: list[str] = []
        self._message_size = 0
        self._frame_count = 0
        # The opening handshake's HTTP head, counted before wsproto buffers it.
        self._head_open = True
        self._head_size = 0
        self._head_lines = 0
        self._head_tail = b""
        # The head's bytes, kept only by a server that answers plain HTTP
        # requests itself (bounded by max_handshake_size like the count).
        self._keep_head = False
        # The head's first bytes: enough to tell a HEAD request, whose answer has no body.
        self._head_start = b""
        self._head_chunks: list[bytes] = []
        self._deflate = (
            BoundedPerMessageDeflate(self.limits.max_message_size)
            if self.limits.permessage_deflate
            else None
        )
        self._close_code: int | None = None
        self._close_reason = ""
        # True while input sits unprocessed in wsproto's buffer because a limit
        # paused us; only then is re-running the parser worth its cost.
        self._held = False

    # The driver's interface

    @property
    def state(self) -> ConnectionState:
        """The connection's :class:`ConnectionState`."""
        return self._state

    @property
    def wants_read(self) -> bool:
        """Whether the backend should read more from the socket now.

        False while the connection is at a limit (calls in flight, unsent
        output): not reading is what lets TCP push back on the peer.
        """
        return self._state is not ConnectionState.CLOSED and self._may_process()

    def close_expected(self) -> bool:
        """True once the backend should expect the socket to close: start the close timer."""
        return self._state in (ConnectionState.CLOSING, ConnectionState.CLOSED)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket. A peer's violation never raises here."""
        if self._state is ConnectionState.CLOSED or not data:
            return
        try:
            if self._head_open:
                self._count_head(data)
            self._ws.receive_data(data)
        except (RemoteProtocolError, UnicodeError) as exc:
            # wsproto decodes some handshake headers itself (Host as IDNA, token
            # lists as ASCII) and lets UnicodeError through for bad bytes there.
            self._handshake_failed(exc)
            return
        self._process()

    def _count_head(self, data: bytes) -> None:
        """Count the handshake head in ``data``; raise before a limit is passed.

        Runs before wsproto sees ``data``, so a head over the limit is never
        buffered. Lines are counted as h11 splits them (on line feeds).
        """
        if len(self._head_start) < 5:
            self._head_start += data[: 5 - len(self._head_start)]
        window = self._head_tail + data
        end = _END_OF_HEAD.search(window)
        head = data if end is None else window[len(self._head_tail) : end.end()]
        self._head_size += len(head)
        self._head_lines += head.count(b"\n")
        if end is not None:
            self._head_open = False
            # Neither the request (status) line nor the blank line is a header.
            headers = self._head_lines - 2
        else:
            self._head_tail = window[-2:]
            headers = self._head_lines - 1
        limits = self.limits
        if self._head_size > limits.max_handshake_size:
            raise HandshakeTooLarge(f"handshake exceeds {limits.max_handshake_size} bytes")
        if headers > limits.max_header_count:
            raise HandshakeTooLarge(f"handshake has more than {limits.max_header_count} headers")
        if self._keep_head:
            self._head_chunks.append(head)

    def receive_eof(self) -> None:
        """The peer closed its side of the socket (or the backend gave up on it)."""
        if self._state is not ConnectionState.CLOSED:
            self._finish(CloseCode.ABNORMAL, "connection lost")

    def events_received(self) -> list[Event]:
        """The events produced since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        """The bytes to write to the socket, in order; empty when there is nothing."""
        if not self._outgoing:
            return b""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        self._outgoing_size = 0
        # Draining the output may lift the output limit that paused input.
        self._resume()
        return data

    def ping(self, payload: bytes = b"") -> None:
        """Send a WebSocket ping (keepalive); the pong arrives as :class:`PongReceived`."""
        if self._state is ConnectionState.OPEN:
            self._write(self._ws.send(Ping(payload=payload)))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake. Harmless on a connection already closing or closed."""
        if self._state is ConnectionState.CONNECTING:
            raise LocalProtocolError("cannot close a connection before its handshake is done")
        if self._state is ConnectionState.OPEN:
            self._close_code, self._close_reason = code, reason
            self._write(self._ws.send(CloseConnection(code=code, reason=reason or None)))
            self._state = ConnectionState.CLOSING

    # Hooks for the server and the client

    def _may_process(self) -> bool:
        return self._outgoing_size < self.limits.max_pending_output

    def _on_handshake_event(self, event: WSEvent) -> None:
        raise NotImplementedError

    def _handshake_failed(self, exc: RemoteProtocolError | UnicodeError) -> None:
        raise NotImplementedError

    def _on_message(self, text: str) -> None:
        raise NotImplementedError

    def _unanswered(self) -> tuple[jsonrpc.RequestId, ...]:
        raise NotImplementedError

    # Internals

    def _write(self, data: bytes) -> None:
        self._outgoing.append(data)
        self._outgoing_size += len(data)

    def _send_json(self, value: Any) -> None:
        self._write(self._ws.send(Message(data=jsonrpc.dumps(value))))

    def _finish(self, code: int, reason: str) -> None:
        self._state = ConnectionState.CLOSED
        self._fragments.clear()
        self._events.append(ConnectionClosed(code, reason, self._unanswered()))

    def _extensions(self) -> list[Extension]:
        """The extensions to offer or accept: permessage-deflate when the limits enable it."""
        return [] if self._deflate is None else [self._deflate]

    def _too_big(self) -> str:
        return f"message exceeds {self.limits.max_message_size} bytes"

    def _fail(self, code: int, reason: str) -> None:
        # Our side ends the connection for cause: say why, then ignore all but the
        # peer's close frame, so that nothing more is buffered for this peer.
        self._fragments.clear()
        self._message_size = 0
        self._frame_count = 0
        self.close(code, reason)

    def _resume(self) -> None:
        if self._held:
            self._process()

    def _process(self) -> None:
        if not self._may_process():
            self._held = True
            return
        self._held = False
        for event in self._ws.events():
            if isinstance(event, TextMessage):
                self._on_text(event)
            elif isinstance(event, BytesMessage):
                if self._state is ConnectionState.OPEN:
                    self._fail(CloseCode.UNSUPPORTED_DATA, "binary messages are not supported")
            elif isinstance(event, Ping):
                if self._ws.state is WSState.OPEN:
                    self._write(self._ws.send(event.response()))
            elif isinstance(event, Pong):
                self._events.append(PongReceived(bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                self._on_close(event)
            else:
                self._on_handshake_event(event)
            if self._state is ConnectionState.CLOSED or not self._may_process():
                # Leave the rest in wsproto's buffer: it is at most one read,
                # since the backend stops reading while we are paused.
                self._held = True
                break

    def _on_text(self, event: TextMessage) -> None:
        if self._state is not ConnectionState.OPEN:
            return
        data = event.data
        # isascii() is O(1) on CPython; only non-ASCII text pays for encoding.
        self._message_size += len(data) if data.isascii() else len(data.encode())
        if self._message_size > self.limits.max_message_size:
            self._fail(CloseCode.MESSAGE_TOO_BIG, self._too_big())
            return
        if not event.message_finished:
            if event.frame_finished:
                self._frame_count += 1
                # This frame ended and the message goes on: it needs one more.
                if self._frame_count >= self.limits.max_fragments:
                    self._fail(
                        CloseCode.MESSAGE_TOO_BIG,
                        f"message has more than {self.limits.max_fragments} fragments",
                    )
                    return
            if data:
                self._fragments.append(data)
            return
        if self._fragments:
            self._fragments.append(data)
            data = "".join(self._fragments)
            self._fragments.clear()
        self._message_size = 0
        self._frame_count = 0
        self._on_message(data)

    def _on_close(self, event: CloseConnection) -> None:
        ws_state = self._ws.state
        if ws_state is WSState.REMOTE_CLOSING:
            # The peer started the closing handshake: answer and we are done.
            self._write(self._ws.send(event.response()))
            self._finish(int(event.code), event.reason or "")
        elif ws_state is WSState.CLOSED:
            # The peer's answer to our close frame.
            code = self._close_code if self._close_code is not None else int(event.code)
            self._finish(code, self._close_reason or event.reason or "")
        else:
            # wsproto could not parse the peer's frames (bad opcode, invalid
            # UTF-8, unmasked frame, a message inflating past the limit...);
            # its parser is dead, so fail at once.
            code = int(event.code)
            reason = self._too_big() if code == CloseCode.MESSAGE_TOO_BIG else event.reason or ""
            if self._state is ConnectionState.OPEN:
                self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
            self._finish(code, reason)
