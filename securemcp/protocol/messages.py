"""Frames into messages: continuation rules, the size and fragment limits, nothing past them.

wsproto's frame decoder hands over each frame's payload as it arrives (a
frame still arriving continues as CONTINUATION, like the next frame of the
message would). :class:`Assembler` puts a message back together under
``Limits.max_message_size`` and ``max_fragments``, counting bytes as they
arrive, and reports a broken stream or a refused message as an exception the
connection turns into a close code.
"""

from __future__ import annotations

from wsproto.frame_protocol import Opcode

from .frames import CloseCode
from .limits import Limits

__all__ = ["Assembler", "Refused", "StreamBroken"]

_BINARY, _CONTINUATION = Opcode.BINARY, Opcode.CONTINUATION


class StreamBroken(Exception):
    """The peer broke the framing rules: close with ``code`` at once and read no more."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Refused(StreamBroken):
    """A message the connection will not take: close with ``code``, keep parsing its frames."""


class Assembler:
    """One connection's message in progress."""

    __slots__ = ("_frames", "_opcode", "_size", "limits", "parts")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.parts: list[bytes] = []
        """The message's payload so far (bounded by ``max_message_size``)."""
        self._opcode: Opcode | None = None
        self._size = 0
        self._frames = 0

    def feed(self, opcode: Opcode, payload: bytes, frame_done: bool, fin: bool) -> bytes | None:
        """Take a data frame's payload; the whole message once it is complete, else ``None``.

        Raises :class:`StreamBroken` for a frame out of sequence, :class:`Refused`
        for a binary message or one over a limit.
        """
        self._sequence(opcode)
        if self._opcode is _BINARY:
            raise Refused(CloseCode.UNSUPPORTED_DATA, "binary messages are not supported")
        limits = self.limits
        self._size += len(payload)
        if self._size > limits.max_message_size:
            raise Refused(CloseCode.MESSAGE_TOO_BIG, too_big(limits))
        if not (frame_done and fin):
            if frame_done:
                self._frames += 1
                # This frame ended and the message goes on: it needs one more.
                if self._frames >= limits.max_fragments:
                    raise Refused(
                        CloseCode.MESSAGE_TOO_BIG,
                        f"message has more than {limits.max_fragments} fragments",
                    )
            if payload:
                self.parts.append(payload)
            return None
        if self.parts:
            self.parts.append(payload)
            payload = b"".join(self.parts)
            self.parts.clear()
        self._opcode = None
        self._size = self._frames = 0
        return payload

    def announced(self, remaining: int, opcode: Opcode | None = None) -> None:
        """A data frame's head says ``remaining`` more payload bytes are coming.

        Raises :class:`Refused` at once when they would take the message past
        ``max_message_size``: a peer announcing a huge frame and then sending
        nothing gets its 1009 now, not only once the bytes pass the limit.
        ``opcode`` is that of the frame's first bytes, in hand: refused, they
        still start the message whose later frames are then skipped.
        """
        if self._size + remaining > self.limits.max_message_size:
            if opcode is not None:
                self._sequence(opcode)
            raise Refused(CloseCode.MESSAGE_TOO_BIG, too_big(self.limits))

    def skip(self, opcode: Opcode, frame_done: bool, fin: bool) -> None:
        """A data frame of a message the connection no longer reads (it is closing)."""
        self._sequence(opcode)
        if frame_done and fin:
            self._opcode = None

    def drop(self) -> None:
        """Forget the message in progress (refused): its remaining frames are skipped."""
        self.parts.clear()
        self._size = self._frames = 0

    def _sequence(self, opcode: Opcode) -> None:
        if opcode is _CONTINUATION:
            if self._opcode is None:
                raise StreamBroken(CloseCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        elif self._opcode is not None:
            raise StreamBroken(
                CloseCode.PROTOCOL_ERROR, f"expected CONTINUATION, got {opcode.name}"
            )
        else:
            self._opcode = opcode


def too_big(limits: Limits) -> str:
    """The close reason of a message over ``max_message_size``."""
    return f"message exceeds {limits.max_message_size} bytes"
