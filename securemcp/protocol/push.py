"""Server push encoded once: a notification as the bytes of a server's WebSocket frame.

A broadcast sends the same notification to many connections. Server-to-client
frames are never masked (RFC 6455 §5.1), so the frame bytes are the same for
every connection that negotiated no extension: encode them once with
:func:`encode_notification` and hand them to each connection's
:meth:`~securemcp.protocol.ServerConnection.send_frame`.
"""

from __future__ import annotations

from typing import Any

from . import jsonrpc
from .frames import text_frame

__all__ = ["encode_notification", "text_frame"]


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
    return text_frame(jsonrpc.dumps_bytes(message))
