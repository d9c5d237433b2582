"""permessage-deflate (RFC 7692) with the inflated size of a message bounded.

wsproto's :class:`~wsproto.extensions.PerMessageDeflate` inflates whatever
arrives in one go: a few kilobytes of a decompression bomb become gigabytes
before anything can count them. :class:`BoundedPerMessageDeflate` asks zlib
for at most one byte more than the message may still hold, so the moment a
message would pass ``max_message_size`` it stops with close code 1009, having
inflated no more than the limit plus one byte.

Its ``accept`` also follows RFC 7692 §5 strictly: an offer with an unknown,
repeated or out-of-range parameter is declined (no compression) instead of
raising, and only the first acceptable offer is taken.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = ["BoundedPerMessageDeflate"]

_SYNC_TAIL = b"\x00\x00\xff\xff"
"""What a sender strips from the end of every compressed message (RFC 7692 §7.2.1)."""

_MIN_WINDOW_BITS = 9
"""zlib cannot inflate a raw stream with a 256-byte window (8): such offers are declined."""
_MAX_WINDOW_BITS = 15


def _window_bits(value: str) -> int | None:
    # RFC 7692 §7.1.2: 1*DIGIT, 8..15; we also refuse 8 (see _MIN_WINDOW_BITS).
    if not (value.isascii() and value.isdigit() and len(value) <= 2):
        return None
    bits = int(value)
    return bits if _MIN_WINDOW_BITS <= bits <= _MAX_WINDOW_BITS else None


class BoundedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate whose inbound messages inflate to at most ``max_message_size`` bytes."""

    def __init__(self, max_message_size: int) -> None:
        super().__init__()
        self.max_message_size = max_message_size
        self._inflated = 0
        self._accepted_offer = False

    # Negotiation (server side)

    def accept(self, offer: str) -> bool | str | None:
        """Answer a client's offer: the response parameters, or ``None`` to decline it."""
        if self._accepted_offer:
            return None  # An earlier offer in the client's list was taken.
        seen: set[str] = set()
        client_bits: int | None = None
        server_bits: int | None = None
        client_no_takeover = server_no_takeover = False
        for param in offer.split(";")[1:]:
            name, has_value, raw = (part.strip() for part in param.partition("="))
            value = raw.strip('"')
            if name in seen:
                return None
            seen.add(name)
            if name == "server_no_context_takeover" and not has_value:
                server_no_takeover = True
            elif name == "client_no_context_takeover" and not has_value:
                client_no_takeover = True
            elif name == "server_max_window_bits" and has_value:
                server_bits = _window_bits(value)
                if server_bits is None:
                    return None
            elif name == "client_max_window_bits":
                if has_value:
                    client_bits = _window_bits(value)
                    if client_bits is None:
                        return None
            else:
                return None
        parameters = []
        if server_no_takeover:
            self.server_no_context_takeover = True
            parameters.append("server_no_context_takeover")
        if client_no_takeover:
            self.client_no_context_takeover = True
            parameters.append("client_no_context_takeover")
        if server_bits is not None:
            self.server_max_window_bits = server_bits
            parameters.append(f"server_max_window_bits={server_bits}")
        if client_bits is not None:
            self.client_max_window_bits = client_bits
            parameters.append(f"client_max_window_bits={client_bits}")
        self._accepted_offer = True
        self._enabled = True
        return "; ".join(parameters)

    # Inbound frames

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """Note whether a new message is compressed; its inflated size starts at zero.

        Unlike wsproto's, a control frame between two fragments leaves the
        message's state alone.
        """
        if rsv.rsv1 and (opcode.iscontrol() or opcode is Opcode.CONTINUATION):
            return CloseReason.PROTOCOL_ERROR
        self._inbound_is_compressible = not opcode.iscontrol()
        if self._inbound_is_compressible and self._inbound_compressed is None:
            self._inflated = 0
            self._inbound_compressed = rsv.rsv1
            if rsv.rsv1 and self._decompressor is None:
                bits = self.server_max_window_bits if proto.client else self.client_max_window_bits
                self._decompressor = zlib.decompressobj(-bits)
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate ``data``, but never past what the message may still hold."""
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """At the end of a compressed message, flush the inflater through the stripped tail."""
        if not fin or not self._inbound_is_compressible:
            return None
        if not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        decompressor = self._decompressor
        assert decompressor is not None  # set by frame_inbound_header for compressed messages
        if decompressor.eof:
            # The sender ended the deflate stream (BFINAL): the next message starts a new one.
            data = b""
            self._decompressor = None
        else:
            result = self._inflate(_SYNC_TAIL)
            if isinstance(result, CloseReason):
                return result
            data = result
        no_context_takeover = (
            self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        )
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        self._inflated = 0
        return data

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None  # set by frame_inbound_header for compressed messages
        if decompressor.eof:
            # Bytes after the end of the deflate stream, within the same message.
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA if data else b""
        room = self.max_message_size - self._inflated
        try:
            # One byte more than the room tells "over the limit" apart from
            # "exactly at it"; max_length=0 would mean unbounded, room + 1 >= 1.
            out = decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > room:
            return CloseReason.MESSAGE_TOO_BIG
        # Below max_length, zlib consumed all the input: nothing is left pending.
        self._inflated += len(out)
        if decompressor.eof and decompressor.unused_data:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        return out
