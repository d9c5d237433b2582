"""What server and client connections share: WebSocket framing and limits.

Bytes go in through ``receive_data``/``receive_eof``; events come out of
``events_received()`` and bytes to write out of ``data_to_send()``. Nothing
here blocks, reads a clock or touches a socket. How a connection ends (the
closing handshake, failing the peer for cause) is in
:mod:`~securemcp.protocol.closing`, whose class is the base of this one's.

wsproto does the WebSocket work in two layers, driven directly: its
:class:`~wsproto.handshake.H11Handshake` (h11 underneath) for the opening
handshake, then its :class:`~wsproto.frame_protocol.FrameDecoder` for the
frames, which parses, unmasks and inflates them. Above that layer this module
assembles messages itself: a message stays bytes until the JSON parser reads
it (which also proves it is UTF-8), so the common message costs no event
objects, no generators and no incremental decoder. The handshake object is
dropped once the upgrade is done: an idle connection keeps only its frame
decoder.
"""

from __future__ import annotations

from typing import Any

from wsproto import ConnectionType
from wsproto.events import Event as WSEvent
from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameDecoder, FrameProtocol, Opcode, ParseFailed
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from . import jsonrpc
from .closing import Closing, ConnectionState
from .deflate import BoundedPerMessageDeflate
from .events import Event, PongReceived
from .frames import CloseCode, parse_close
from .head import HeadCounter
from .limits import Limits
from .messages import Assembler, Refused, StreamBroken
from .output import Output

__all__ = ["CloseCode", "ConnectionState"]

_TEXT, _BINARY, _CONTINUATION = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
_PING, _PONG, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE

# A server's control frames carry no per-connection state on the way out, so
# one encoder serves every server connection that negotiated no extension.
_SERVER_FRAMES = FrameProtocol(client=False, extensions=[])


class _Endpoint(Closing):
    """Common machinery of :class:`ServerConnection` and :class:`ClientConnection`."""

    # Slots: a server holds one of these per idle connection, and a dict of
    # some thirty attributes would be most of its size.
    __slots__ = (
        "_client",
        "_compressed_out",
        "_deflate",
        "_early",
        "_events",
        "_frames",
        "_handshake",
        "_head",
        "_held",
        "_messages",
        "_output",
        "_sender",
        "limits",
    )

    def __init__(
        self, role: ConnectionType, limits: Limits | None, *, keep_head: bool = False
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self._client = role is ConnectionType.CLIENT
        self._handshake: H11Handshake | None = H11Handshake(role)
        # After the upgrade: wsproto's frame parser, and what encodes our control frames.
        self._frames: FrameDecoder | None = None
        # A client gets an encoder of its own when it opens (see _opened).
        self._sender = _SERVER_FRAMES
        self._compressed_out = False
        self._state = ConnectionState.CONNECTING
        self._events: list[Event] = []
        self._output = Output()
        self._messages = Assembler(self.limits)
        # Bytes that followed the handshake head in the same read, kept for
        # the frame parser until the upgrade is decided.
        self._early = b""
        # The opening handshake's HTTP head, counted before wsproto buffers it;
        # its bytes kept only by a server that answers plain HTTP itself.
        self._head: HeadCounter | None = HeadCounter(self.limits, keep=keep_head)
        self._deflate = (
            BoundedPerMessageDeflate(self.limits.max_message_size)
            if self.limits.permessage_deflate
            else None
        )
        self._close_sent = False
        self._close_code: int | None = None
        self._close_reason = ""
        # True while input sits unprocessed because a limit paused us; only
        # then is re-running the parser worth its cost.
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

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket. A peer's violation never raises here."""
        frames = self._frames
        if frames is not None:
            # The hot path: an open connection.
            if data and self._state is not ConnectionState.CLOSED:
                frames.receive_bytes(data)
                self._process()
            return
        self._receive_unframed(data)

    def _receive_unframed(self, data: bytes) -> None:
        """Bytes of a connection without frames: its handshake (a server's plain HTTP too)."""
        if self._state is ConnectionState.CLOSED or not data:
            return
        try:
            self._receive_handshake(data)
        except (RemoteProtocolError, UnicodeError) as exc:
            # wsproto decodes some handshake headers itself (Host as IDNA, token
            # lists as ASCII) and lets UnicodeError through for bad bytes there.
            self._handshake_failed(exc)
            return
        self._process()

    def _receive_handshake(self, data: bytes) -> None:
        handshake, head = self._handshake, self._head
        # Both are dropped once frames flow, and only then.
        assert handshake is not None
        assert head is not None
        if head.complete:
            if self._client:
                handshake.receive_data(data)  # the body of a refusal
            else:
                # Frames pipelined behind the request: the core holds input
                # while the upgrade is decided, so this is at most one read.
                self._early += data
            return
        end = head.count(data)
        # What follows the head is kept first: should the head turn out to be
        # a plain HTTP request (wsproto raises), it is that request's body.
        if end < len(data):
            if self._client:
                self._early = data[end:]
            else:
                self._early += data[end:]
        handshake.receive_data(data[:end])

    def receive_eof(self) -> None:
        """The peer closed its side of the socket (or the backend gave up on it)."""
        if self._state is not ConnectionState.CLOSED:
            self._finish(CloseCode.ABNORMAL, "connection lost")

    @property
    def has_events(self) -> bool:
        """Whether ``events_received()`` would return anything (a cheap check, no list)."""
        return bool(self._events)

    def events_received(self) -> list[Event]:
        """The events produced since the last call, oldest first."""
        events = self._events
        if events:
            self._events = []
        return events

    def data_to_send(self) -> bytes:
        """The bytes to write to the socket, in order; empty when there is nothing."""
        data = self._output.take()
        if data and self._held:
            # Draining the output may lift the output limit that paused input.
            self._process()
        return data

    def data_to_send_chunks(self) -> list[bytes]:
        """:meth:`data_to_send` as chunks to write in order; empty when there is nothing.

        Large parts of an answer come as chunks of their own instead of being
        copied into one buffer: a backend that writes chunk by chunk (or with
        scatter-gather I/O) saves a copy of every large answer. Small pieces
        come joined, one write for them all.
        """
        chunks = self._output.take_chunks()
        if chunks and self._held:
            self._process()
        return chunks

    def ping(self, payload: bytes = b"") -> None:
        """Send a WebSocket ping (keepalive); the pong arrives as :class:`PongReceived`."""
        if self._state is ConnectionState.OPEN:
            self._write(bytes(self._sender.ping(payload)))

    # Hooks for the server and the client

    def _may_process(self) -> bool:
        return self._output.size < self.limits.max_pending_output

    def _on_handshake_event(self, event: WSEvent) -> None:
        raise NotImplementedError

    def _handshake_failed(self, exc: RemoteProtocolError | UnicodeError) -> None:
        raise NotImplementedError

    def _on_message(self, data: bytes) -> None:
        """One complete text message, as the bytes the peer sent (UTF-8 not yet checked)."""
        raise NotImplementedError

    def _opened(self, extensions: list[Extension]) -> None:
        """The upgrade is done: frames flow from now on, through ``extensions``."""
        enabled = [extension for extension in extensions if extension.enabled()]
        self._frames = FrameDecoder(self._client, enabled)
        if enabled or self._client:
            # Compression keeps state per connection, and a client masks every
            # frame it sends: both need an encoder of their own.
            self._sender = FrameProtocol(self._client, enabled)
            self._compressed_out = bool(enabled)
        self._handshake = None
        self._head = None
        self._state = ConnectionState.OPEN
        early, self._early = self._early, b""
        if early:
            self._frames.receive_bytes(early)

    # Internals

    def _write(self, data: bytes) -> None:
        self._output.append(data)

    def _send_payload(self, payload: bytes, *more: bytes) -> None:
        """Send one text message whose UTF-8 bytes are ``payload`` followed by ``more``."""
        if self._client or self._compressed_out:
            text = b"".join((payload, *more)).decode() if more else payload.decode()
            self._write(bytes(self._sender.send_data(text)))
            return
        self._output.append_text(payload, *more)

    def _send_json(self, value: Any) -> None:
        self._send_payload(jsonrpc.dumps_bytes(value))

    def _extensions(self) -> list[Extension]:
        """The extensions to offer or accept: permessage-deflate when the limits enable it."""
        return [] if self._deflate is None else [self._deflate]

    def _process(self) -> None:
        if self._state is ConnectionState.CLOSED:
            return  # nothing after the close is read (wsproto's parser stops there too)
        if not self._may_process():
            self._held = True
            return
        self._held = False
        frames = self._frames
        if frames is None:
            self._process_handshake()
            return
        while True:
            try:
                frame = frames.process_buffer()
            except ParseFailed as exc:
                # wsproto could not parse the peer's frames (bad opcode, an
                # unmasked frame, a message inflating past the limit...): the
                # stream cannot be trusted any more, so fail at once.
                self._broken(int(exc.code), str(exc))
                return
            if frame is None:
                # Mostly the read ended between frames: no head is pending then.
                if frames.header is not None and self._state is ConnectionState.OPEN:
                    try:
                        self._check_announced(frames)  # a head that came without its payload
                    except Refused as refusal:
                        self._fail(refusal.code, refusal.reason)
                return
            opcode = frame.opcode
            payload: Any = frame.payload
            if opcode is _TEXT or opcode is _CONTINUATION or opcode is _BINARY:
                try:
                    if self._state is ConnectionState.OPEN:
                        if not frame.frame_finished:
                            self._check_announced(frames, len(payload), opcode)
                        message = self._messages.feed(
                            opcode, payload, frame.frame_finished, frame.message_finished
                        )
                        if message is not None:
                            self._on_message(message)
                    else:  # closing: the peer's messages go unread
                        self._messages.skip(opcode, frame.frame_finished, frame.message_finished)
                except Refused as refusal:
                    self._fail(refusal.code, refusal.reason)
                except StreamBroken as broken:
                    self._broken(broken.code, broken.reason)
                    return
            elif opcode is _PING:
                if not self._close_sent:
                    self._write(bytes(self._sender.pong(payload)))
            elif opcode is _PONG:
                self._events.append(PongReceived(bytes(payload)))
            else:  # _CLOSE: the only other opcode wsproto's parser lets through
                try:
                    code, reason = parse_close(payload)
                except ParseFailed as exc:
                    self._broken(int(exc.code), str(exc))
                    return
                self._on_close(code, reason)
            if self.state is ConnectionState.CLOSED:  # the property: mypy narrowed _state
                return
            if not self._may_process():
                # Leave the rest in the parser's buffer: it is at most one read,
                # since the backend stops reading while we are paused.
                self._held = True
                return

    def _check_announced(
        self, frames: FrameDecoder, arriving: int = 0, opcode: Opcode | None = None
    ) -> None:
        """Raise :class:`Refused` for a data frame whose head announces more than
        the message may hold, ``arriving`` bytes of it (``opcode``) in hand, not yet counted.

        Checked before the bytes are kept, so a huge frame costs nothing; only
        without compression: a compressed frame's length says little of what
        it inflates to, which the deflate extension bounds itself.
        """
        header = frames.header
        # A binary message is refused for what it is (1003) as its first bytes come.
        if header is None or header.opcode.iscontrol() or header.opcode is _BINARY:
            return
        if frames.extensions:
            return
        self._messages.announced(arriving + header.payload_len - frames.payload_consumed, opcode)

    def _process_handshake(self) -> None:
        handshake = self._handshake
        assert handshake is not None
        for event in handshake.events():
            self._on_handshake_event(event)
            if self._frames is not None:
                # Accepted (a client's upgrade answer): frames may have followed it.
                self._process()
                return
            if not self._may_process():
                self._held = True
                return
