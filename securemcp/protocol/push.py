"""Server push encoded once: a notification as the bytes of a server's WebSocket frame.

A broadcast sends the same notification to many connections. Server-to-client
frames are never masked (RFC 6455 §5.1), so the frame bytes are the same for
every connection that negotiated no extension: encode them once with
:func:`encode_notification` and hand them to each connection's
:meth:`~securemcp.protocol.ServerConnection.send_frame`.
"""

from __future__ import annotations

import struct
from typing import Any

from . import jsonrpc

__all__ = ["encode_notification", "text_frame"]

_FIN_TEXT = 0x81
"""FIN bit set, opcode 0x1 (text): a whole message in one frame."""


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (a server's) carrying ``payload`` (UTF-8)."""
    size = len(payload)
    if size < 126:
        header = bytes((_FIN_TEXT, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    return header + payload


def encode_notification(method: str, params: Any = None, *, jsonrpc_2: bool = False) -> bytes:
    """The frame bytes of notification ``method`` with ``params`` (omitted when ``None``).

    ``jsonrpc_2`` adds ``"jsonrpc": "2.0"``, as connections speaking MCP need;
    the seed dialect's notifications carry only ``method`` and ``params``.
    Raises ``pydantic_core.PydanticSerializationError`` for params JSON cannot hold.
    """
    message: dict[str, Any] = {"jsonrpc": "2.0"} if jsonrpc_2 else {}
    message["method"] = method
    if params is not None:
        message["params"] = params
    return text_frame(jsonrpc.dumps(message).encode())
