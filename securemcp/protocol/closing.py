"""How a connection ends: the closing handshake, and failing the peer for cause.

:class:`Closing` is the base of every WebSocket connection object
(:class:`~securemcp.protocol.connection._Endpoint`, which keeps the state it
works on): :meth:`~Closing.close` starts the closing handshake, a peer's close
frame is answered or accepted, a peer that breaks the protocol is closed with
the RFC 6455 code, and the end leaves one
:class:`~securemcp.protocol.ConnectionClosed` event. :class:`ConnectionState`
names the states this moves a connection through.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from ..errors import LocalProtocolError
from .events import ConnectionClosed
from .frames import CloseCode
from .messages import too_big

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameProtocol

    from . import jsonrpc
    from .events import Event
    from .limits import Limits
    from .messages import Assembler

__all__ = ["Closing", "ConnectionState"]


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


class Closing:
    """The closing methods of a connection, over the state the connection keeps."""

    # The state closing changes; the connection sets it up.
    __slots__ = ("_close_code", "_close_reason", "_close_sent", "_state")

    _state: ConnectionState
    _close_sent: bool
    _close_code: int | None
    _close_reason: str
    # What it reads or appends to.
    _events: list[Event]
    _messages: Assembler
    _sender: FrameProtocol
    limits: Limits

    def close_expected(self) -> bool:
        """True once the backend should expect the socket to close: start the close timer."""
        return self._state is ConnectionState.CLOSING or self._state is ConnectionState.CLOSED

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake. Harmless on a connection already closing or closed."""
        if self._state is ConnectionState.CONNECTING:
            raise LocalProtocolError("cannot close a connection before its handshake is done")
        if self._state is ConnectionState.OPEN:
            self._close_code, self._close_reason = code, reason
            self._send_close(code, reason)
            self._state = ConnectionState.CLOSING

    # Hooks for the connection

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _unanswered(self) -> tuple[jsonrpc.RequestId, ...]:
        raise NotImplementedError

    # Internals

    def _send_close(self, code: int, reason: str) -> None:
        self._close_sent = True
        if code == CloseCode.NO_STATUS:
            # Echoing a close that carried no code: an empty close frame.
            self._write(bytes(self._sender.close()))
        else:
            self._write(bytes(self._sender.close(code, reason or None)))

    def _finish(self, code: int, reason: str) -> None:
        self._state = ConnectionState.CLOSED
        self._messages.drop()
        self._events.append(ConnectionClosed(code, reason, self._unanswered()))

    def _fail(self, code: int, reason: str) -> None:
        # Our side ends the connection for cause: say why, then ignore all but the
        # peer's close frame, so that nothing more is buffered for this peer.
        self._messages.drop()
        self.close(code, reason)

    def _invalid_utf8(self) -> None:
        """The message just read is not UTF-8: RFC 6455 ends the connection with 1007."""
        self._broken(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")

    def _on_close(self, code: int, reason: str) -> None:
        if not self._close_sent:
            # The peer started the closing handshake: answer and we are done.
            self._send_close(code, reason)
            self._finish(code, reason)
        else:
            # The peer's answer to our close frame.
            ours = self._close_code
            self._finish(ours if ours is not None else code, self._close_reason or reason)

    def _broken(self, code: int, reason: str) -> None:
        """The peer broke the protocol: close with ``code`` and stop reading it."""
        if code == CloseCode.MESSAGE_TOO_BIG:
            reason = too_big(self.limits)  # wsproto's text is "error in extension"
        elif reason == "error in extension":
            reason = (
                "invalid compressed data"
                if code == CloseCode.INVALID_DATA
                else "invalid use of the compression bit"
            )
        if self._state is ConnectionState.OPEN:
            self._send_close(code, reason)
        self._finish(code, reason)
