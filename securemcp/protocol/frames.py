"""The frame-level pieces the core builds or checks itself, beside wsproto's codec.

wsproto parses every frame and encodes every control, client and compressed
frame. Two small things are done here: the server's own unfragmented text
frame, built in one copy from the encoded answer's bytes (wsproto's encoder
takes text only, encodes it again and copies the payload twice), and the
validation of a close frame's code and reason (RFC 6455 §7.4), read from the
frame wsproto parsed.
"""

from __future__ import annotations

import struct

from wsproto.frame_protocol import CloseReason, ParseFailed

__all__ = ["CloseCode", "parse_close", "text_frame", "text_frame_header"]

_FIN_TEXT = 0x81
"""FIN bit set, opcode 0x1 (text): a whole message in one frame."""


def text_frame(payload: bytes, *more: bytes) -> bytes:
    """One unmasked, unfragmented text frame (a server's) carrying ``payload`` (UTF-8).

    ``more`` parts are appended to the payload in the same copy. The one frame
    a server sends on every answer and every broadcast, built here rather than
    by wsproto's encoder, which takes text only (a second UTF-8 encoding) and
    copies the payload twice; everything else (control frames, masked client
    frames, compressed frames) is wsproto's.
    """
    size = len(payload) + sum(map(len, more)) if more else len(payload)
    header = text_frame_header(size)
    return b"".join((header, payload, *more)) if more else header + payload


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked, unfragmented text frame carrying ``size`` bytes."""
    if size < 126:
        return bytes((_FIN_TEXT, size))
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, size)
    return struct.pack("!BBQ", _FIN_TEXT, 127, size)


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


# Close codes a peer may not send (RFC 6455 §7.4.1-2): the local-only ones,
# and the protocol range's codes that are unassigned.
_ASSIGNED_CLOSE_CODES = frozenset({*range(1000, 1004), *range(1007, 1015)})


def parse_close(payload: bytes) -> tuple[int, str]:
    """The peer's close code and reason, validated as RFC 6455 §7.4 says."""
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ParseFailed("CLOSE with 1 byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    if not (code in _ASSIGNED_CLOSE_CODES or 3000 <= code <= 4999):
        raise ParseFailed(f"CLOSE with invalid code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ParseFailed(
            "invalid UTF-8 in the close reason", CloseReason.INVALID_FRAME_PAYLOAD_DATA
        ) from None
    return code, reason
