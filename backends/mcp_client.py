"""What the MCP clients need to speak MCP, over WebSocket and over Streamable HTTP.

:class:`~securemcp.transport.WebSocketClient` speaks MCP when it asks to
(``WebSocketClient(url, mcp=True)``) or when the server chose the ``mcp``
subprotocol; :class:`~securemcp.transport.HTTPClient` always does. This module
holds the parts of the dialect that do not depend on the transport: the
``server/discover`` probe and the 2026-07-28 ``_meta`` envelope, the
``initialize`` request, ``tools/list`` paging, the shape of a ``tools/call``
request and result, progress updates.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from securemcp.errors import InternalError, ToolError
from securemcp.protocol.mcp import (
    LATEST_PROTOCOL_VERSION,
    PROTOCOL_VERSIONS,
    UnsupportedProtocolVersion,
)
from securemcp.protocol.mcp_stateless import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    MODERN_PROTOCOL_VERSIONS,
    PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY,
)

__all__ = [
    "ProgressCallback",
    "ProgressUpdate",
    "ServerInfo",
    "ToolResult",
    "check_result_type",
    "discover_server_info",
    "initialize_params",
    "list_all_tools",
    "newest_modern_version",
    "parse_discover_result",
    "parse_initialize_result",
    "parse_tool_result",
    "request_meta",
    "tool_call_params",
    "with_meta",
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
    """What an MCP server said about itself: its ``server/discover`` or ``initialize`` answer."""

    protocol_version: str
    """The revision in use: 2026-07-28 (every request names it), or the negotiated one."""
    name: str
    version: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    instructions: str | None = None
    supported_versions: tuple[str, ...] = ()
    """``server/discover``'s ``supportedVersions``; empty after ``initialize``."""


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


def request_meta(version: str, client_version: str) -> dict[str, Any]:
    """The 2026-07-28 ``_meta`` envelope of every request: revision, no capabilities, who we are."""
    return {
        PROTOCOL_VERSION_KEY: version,
        CLIENT_CAPABILITIES_KEY: {},
        CLIENT_INFO_KEY: {"name": CLIENT_NAME, "version": client_version},
    }


def with_meta(params: Any, meta: dict[str, Any]) -> Any:
    """``params`` with ``meta`` added to its ``_meta`` (a progress token there stays)."""
    if params is None:
        return {"_meta": meta}
    if not isinstance(params, dict):
        return params  # Not ours to fix: the server will say what is wrong.
    own = params.get("_meta")
    return {**params, "_meta": {**own, **meta} if isinstance(own, dict) else meta}


def newest_modern_version(supported: Any) -> str | None:
    """The newest 2026-07-28-style revision both sides speak, from a ``supported`` list."""
    if not isinstance(supported, list):
        return None
    mutual = [version for version in MODERN_PROTOCOL_VERSIONS if version in supported]
    return mutual[-1] if mutual else None


def parse_discover_result(result: Any, version: str) -> ServerInfo | None:
    """Read a ``server/discover`` answer to a request of ``version``.

    ``None`` when the answer is not a discover result (a legacy server that
    answers every method): the caller falls back to ``initialize``.
    """
    if not isinstance(result, dict):
        return None
    if not isinstance(result.get("supportedVersions"), list) or not isinstance(
        result.get("capabilities"), dict
    ):
        return None
    return discover_server_info(result, version)


def discover_server_info(result: dict[str, Any], version: str) -> ServerInfo:
    """The :class:`ServerInfo` of a ``server/discover`` result, read leniently.

    A field of the wrong type reads as absent: the caller has already decided
    that ``result`` is a discover result.
    """
    meta = result.get("_meta")
    info = meta.get(SERVER_INFO_KEY) if isinstance(meta, dict) else None
    info = info if isinstance(info, dict) else {}
    supported = result.get("supportedVersions")
    capabilities = result.get("capabilities")
    instructions = result.get("instructions")
    return ServerInfo(
        protocol_version=version,
        name=str(info.get("name", "")),
        version=str(info.get("version", "")),
        capabilities=capabilities if isinstance(capabilities, dict) else {},
        instructions=instructions if isinstance(instructions, str) else None,
        supported_versions=(
            tuple(str(item) for item in supported) if isinstance(supported, list) else ()
        ),
    )


def check_result_type(result: Any) -> None:
    """A 2026-07-28 result must be ``complete``: we declare nothing that asks for more input.

    An absent ``resultType`` counts as ``complete`` (an earlier-revision server);
    any other value is an answer we cannot read, so InternalError.
    """
    if isinstance(result, dict):
        kind = result.get("resultType", "complete")
        if kind != "complete":
            raise InternalError(f"unsupported MCP result: resultType {kind!r}")


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


def tool_call_params(name: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``tools/call`` request's params: the tool's ``name``, its ``arguments`` if any."""
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = dict(arguments)
    return params


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


async def list_all_tools(list_page: Callable[[Any], Awaitable[Any]]) -> list[dict[str, Any]]:
    """Every page of ``tools/list``, in the server's order.

    ``list_page(params)`` sends one ``tools/list`` request and returns its result.
    """
    tools: list[dict[str, Any]] = []
    cursor: Any = None
    seen: set[str] = set()
    while True:
        result = await list_page(None if cursor is None else {"cursor": cursor})
        page = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(page, list):
            raise InternalError("malformed tools/list answer: no 'tools' list")
        tools.extend(page)
        cursor = result.get("nextCursor")
        if not isinstance(cursor, str):
            return tools
        if cursor in seen:
            # A server that pages in a circle would keep us here for ever.
            raise InternalError("malformed tools/list answer: the cursor repeats")
        seen.add(cursor)
