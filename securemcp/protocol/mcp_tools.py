"""MCP's tools on the wire, in every revision: ``tools/list`` pages and ``tools/call`` answers.

What :class:`~securemcp.protocol.mcp.MCPSession` (on a WebSocket, or for one
HTTP request) writes about tools, whatever the revision: the opaque cursor of a
``tools/list`` page, a tool's failure as a result the model sees, and a
successful call's whole answer, its result encoded only once.

Pure like the rest of the core: no I/O, no clock, no threads.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeVar

from ..errors import InvalidParams
from .jsonrpc import RequestId, dumps_bytes
from .mcp_stateless import SERVER_INFO_KEY

__all__ = [
    "LEGACY_TAIL",
    "TOOLS_CALL",
    "TOOLS_PAGE_SIZE",
    "answer_parts",
    "complete_tail",
    "tool_error_result",
    "tools_page",
    "validation_text",
]

TOOLS_PAGE_SIZE = 100
"""Tools per ``tools/list`` page."""

TOOLS_CALL = "tools/call"
"""The method of MCP tool calls (:attr:`ToolCall.method` tells the dialects apart)."""

LEGACY_TAIL = b',"isError":false}}'
"""The end of a successful ``tools/call`` answer before 2026-07-28."""

_CURSOR_PREFIX = "tools:"

_T = TypeVar("_T")


def tool_error_result(text: str) -> dict[str, Any]:
    """A ``tools/call`` result reporting a failure the model should see."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def validation_text(exc: InvalidParams) -> str:
    """The text of a tool error result for arguments that failed validation."""
    errors = exc.data if isinstance(exc.data, list) else []
    if len(errors) < 2:
        return exc.message
    # Every problem at once, so that a model can fix them in one retry.
    lines = [exc.message]
    for error in errors[1:]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "arguments"
        lines.append(f"{where}: {error.get('msg', '')}")
    return "\n".join(lines)


def tools_page(tools: Sequence[_T], cursor: Any, size: int) -> tuple[Sequence[_T], str | None]:
    """The page of ``tools`` that ``cursor`` (``None``: the first) starts, and the next's cursor.

    A cursor this server did not hand out, or one past the end, raises -32602.
    """
    start = 0 if cursor is None else _decode_cursor(cursor, len(tools))
    end = start + size
    return tools[start:end], (_encode_cursor(end) if end < len(tools) else None)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{offset}".encode()).decode()


def _decode_cursor(cursor: Any, count: int) -> int:
    invalid = InvalidParams("Invalid params: invalid cursor")
    if not isinstance(cursor, str) or len(cursor) > 64:
        raise invalid
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise invalid from None
    digits = text.removeprefix(_CURSOR_PREFIX)
    if digits == text or not digits.isdigit():
        raise invalid
    offset = int(digits)
    if not 0 < offset < count:
        raise invalid
    return offset


@lru_cache(maxsize=16)
def complete_tail(name: str, version: str) -> bytes:
    """The end of a 2026-07-28 ``tools/call`` success: the same bytes for every call."""
    info = {SERVER_INFO_KEY: {"name": name, "version": version}}
    return b',"isError":false,"resultType":"complete","_meta":' + dumps_bytes(info) + b"}}"


def answer_parts(request_id: RequestId, result: Any, structured: bool, tail: bytes) -> list[bytes]:
    """The whole ``tools/call`` answer to ``request_id`` for ``result``, in parts.

    The result is encoded once: its JSON is the ``text`` content and, when
    ``structured`` (a tool with an output schema, a revision that shows it)
    and the result is an object, it is spliced in as ``structuredContent``
    unchanged, so a large result does not cost two full encodings. ``tail``
    ends the result (:data:`LEGACY_TAIL`, or :func:`complete_tail`). The
    parts join into the answer's UTF-8 bytes. Raises
    ``pydantic_core.PydanticSerializationError`` for a value JSON cannot hold.
    """
    encoded = dumps_bytes(result)
    # An integer id (what clients send) needs no encoder.
    wire_id = b"%d" % request_id if type(request_id) is int else dumps_bytes(request_id)
    head = b'{"jsonrpc":"2.0","id":' + wire_id
    if isinstance(result, str):
        # The string itself, already a JSON string as the encoder wrote it.
        parts = [head, b',"result":{"content":[{"type":"text","text":', encoded, b"}]"]
    else:
        # JSON text holds no raw control character: as a JSON string it
        # only needs its backslashes and quotes escaped (two C-speed passes;
        # bytes.replace returns the very object when there is none).
        text = encoded.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        parts = [head, b',"result":{"content":[{"type":"text","text":"', text, b'"}]']
    if structured and encoded[:1] == b"{":
        parts += (b',"structuredContent":', encoded)
    parts.append(tail)
    return parts
