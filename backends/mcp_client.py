"""What :class:`~securemcp.transport.WebSocketClient` needs to speak MCP.

The client speaks MCP when it asks to (``WebSocketClient(url, mcp=True)``) or
when the server chose the ``mcp`` subprotocol. This module holds the parts of
that dialect that are plain data: the ``initialize`` request, the shape of a
``tools/call`` result, progress updates.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from securemcp.errors import InternalError, ToolError
from securemcp.protocol.mcp import (
    LATEST_PROTOCOL_VERSION,
    PROTOCOL_VERSIONS,
    UnsupportedProtocolVersion,
)

__all__ = [
    "ProgressCallback",
    "ProgressUpdate",
    "ServerInfo",
    "ToolResult",
    "initialize_params",
    "parse_initialize_result",
    "parse_tool_result",
]

CLIENT_NAME = "securemcp"


class ProgressUpdate(NamedTuple):
    """One ``notifications/progress`` for a call: unpacks as ``(progress, total, message)``."""

    progress: float
    total: float | None = None
    message: str | None = None


ProgressCallback = Callable[[ProgressUpdate], "Awaitable[None] | None"]
"""``on_progress(update)``; an awaitable it returns is awaited before the next update."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What an MCP server said about itself in its ``initialize`` answer."""

    protocol_version: str
    """The negotiated protocol revision."""
    name: str
    version: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of an MCP ``tools/call``."""

    content: list[dict[str, Any]]
    """The content blocks (``{"type": "text", "text": ...}`` and others), as sent."""
    structured_content: Any = None
    """``structuredContent``, when the tool has an output schema."""
    is_error: bool = False
    """Whether the tool failed (or its arguments were invalid): the text says why."""

    @property
    def text(self) -> str:
        """The text blocks joined by newlines."""
        return "\n".join(
            str(block.get("text", "")) for block in self.content if block.get("type") == "text"
        )

    def value(self) -> Any:
        """What the tool returned, as ``invoke_tool`` gives it; a failure raises ToolError.

        ``structuredContent`` when present, else the text parsed as JSON, else the text.
        """
        if self.is_error:
            raise ToolError(self.text or "Tool execution error")
        if self.structured_content is not None:
            return self.structured_content
        text = self.text
        try:
            return json.loads(text)
        except ValueError:
            return text


def initialize_params(client_version: str) -> dict[str, Any]:
    """The ``initialize`` request's params: our latest revision, no client capabilities."""
    return {
        "protocolVersion": LATEST_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": CLIENT_NAME, "version": client_version},
    }


def parse_initialize_result(result: Any) -> ServerInfo:
    """Check the server's ``initialize`` answer; an unknown revision raises.

    Raises :class:`UnsupportedProtocolVersion` (the spec says to disconnect
    then) or :class:`InternalError` for an answer without the required fields.
    """
    if not isinstance(result, dict):
        raise InternalError("malformed initialize answer: not an object")
    version = result.get("protocolVersion")
    if version not in PROTOCOL_VERSIONS:
        raise UnsupportedProtocolVersion(version)
    info = result.get("serverInfo")
    info = info if isinstance(info, dict) else {}
    capabilities = result.get("capabilities")
    instructions = result.get("instructions")
    return ServerInfo(
        protocol_version=str(version),
        name=str(info.get("name", "")),
        version=str(info.get("version", "")),
        capabilities=capabilities if isinstance(capabilities, dict) else {},
        instructions=instructions if isinstance(instructions, str) else None,
    )


def parse_tool_result(result: Any) -> ToolResult:
    """Read a ``tools/call`` answer; one without a ``content`` list raises InternalError."""
    content = result.get("content") if isinstance(result, dict) else None
    if not isinstance(content, list):
        raise InternalError("malformed tools/call answer: no 'content' list")
    return ToolResult(
        content=[block for block in content if isinstance(block, dict)],
        structured_content=result.get("structuredContent"),
        is_error=result.get("isError") is True,
    )


def parse_progress(params: Any) -> tuple[Any, ProgressUpdate] | None:
    """``(token, update)`` from a ``notifications/progress``'s params; ``None`` if malformed."""
    if not isinstance(params, dict):
        return None
    progress = params.get("progress")
    total = params.get("total")
    message = params.get("message")
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        return None
    update = ProgressUpdate(
        progress,
        total if isinstance(total, (int, float)) and not isinstance(total, bool) else None,
        message if isinstance(message, str) else None,
    )
    return params.get("progressToken"), update
