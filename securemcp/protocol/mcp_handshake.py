"""MCP's handshake revisions (2024-11-05 to 2025-11-25): ``initialize``, and what each shows.

A legacy (handshake) connection opens with ``initialize``: the client names the
revision it wants, the server answers with that one if it speaks it, else with
its latest, and a client that cannot speak the answer disconnects
(:class:`UnsupportedProtocolVersion`, raised on the client side). The revision
agreed then decides what the server may send: tool titles, ``outputSchema`` and
``structuredContent`` from 2025-06-18; tool annotations and progress messages
from 2025-03-26. A 2026-07-28 request names its revision itself
(:mod:`.mcp_stateless`), and the same rules apply to it.

Pure like the rest of the core: no I/O, no clock, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParams, SecureMCPError
from ..tools import Tool

__all__ = [
    "ANNOTATIONS_AND_MESSAGES",
    "LATEST_PROTOCOL_VERSION",
    "PROTOCOL_VERSIONS",
    "TITLES_AND_OUTPUT",
    "Handshake",
    "UnsupportedProtocolVersion",
    "answer_initialize",
    "at_least",
    "describe_tool",
]

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
"""The handshake (``initialize``) MCP revisions SecureMCP speaks, oldest first."""

LATEST_PROTOCOL_VERSION = PROTOCOL_VERSIONS[-1]
"""What the server answers an ``initialize`` asking for a revision it does not know."""

TITLES_AND_OUTPUT = "2025-06-18"
"""The first revision with ``Tool.title``, ``outputSchema`` and ``structuredContent``."""

ANNOTATIONS_AND_MESSAGES = "2025-03-26"
"""The first revision with ``Tool.annotations`` and a progress notification's ``message``."""


class UnsupportedProtocolVersion(SecureMCPError):
    """The server chose an MCP protocol revision this client does not speak."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"the server chose MCP protocol version {version!r}; "
            f"supported: {', '.join(PROTOCOL_VERSIONS)}"
        )
        self.version = version


def at_least(revision: str, version: str | None) -> bool:
    """Whether ``version`` (``None``: none agreed yet) is ``revision`` or a later one."""
    # Revisions are ISO dates, so string order is time order.
    return version is not None and version >= revision


@dataclass(frozen=True, slots=True)
class Handshake:
    """What an ``initialize`` request settled, and the answer to send."""

    protocol_version: str
    """The revision agreed: the client's if we speak it, else our latest."""
    client_capabilities: dict[str, Any]
    """The client's ``capabilities``, as it sent them (empty if it sent none)."""
    client_info: dict[str, Any] | None
    """The client's ``clientInfo`` (name, version ...), as it sent it."""
    result: dict[str, Any]
    """The ``initialize`` result."""


def answer_initialize(
    params: dict[str, Any], server_info: dict[str, Any], instructions: str | None
) -> Handshake:
    """Answer an ``initialize`` with ``params``, as the server ``server_info`` names.

    Raises :class:`~securemcp.errors.InvalidParams` when the client names no
    revision at all (``data`` lists the supported ones).
    """
    requested = params.get("protocolVersion")
    if not isinstance(requested, str):
        raise InvalidParams(
            "Unsupported protocol version",
            data={"supported": list(PROTOCOL_VERSIONS), "requested": requested},
        )
    # The spec: answer the client's revision if we speak it, else our latest.
    version = requested if requested in PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
    capabilities = params.get("capabilities")
    client_info = params.get("clientInfo")
    result: dict[str, Any] = {
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": dict(server_info),
    }
    if instructions:
        result["instructions"] = instructions
    return Handshake(
        protocol_version=version,
        client_capabilities=capabilities if isinstance(capabilities, dict) else {},
        client_info=client_info if isinstance(client_info, dict) else None,
        result=result,
    )


def describe_tool(tool: Tool, version: str | None) -> dict[str, Any]:
    """``tool`` as an MCP tool object for revision ``version``."""
    info: dict[str, Any] = {"name": tool.name}
    modern = at_least(TITLES_AND_OUTPUT, version)
    if tool.title is not None and modern:
        info["title"] = tool.title
    if tool.description is not None:
        info["description"] = tool.description
    info["inputSchema"] = tool.input_schema
    if tool.output_schema is not None and modern:
        info["outputSchema"] = tool.output_schema
    if tool.annotations and at_least(ANNOTATIONS_AND_MESSAGES, version):
        info["annotations"] = dict(tool.annotations)
    return info
