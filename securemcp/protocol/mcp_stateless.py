"""MCP revision 2026-07-28: the stateless request envelope, ``server/discover``, results.

At 2026-07-28 there is no ``initialize`` handshake: every request carries its
protocol version and the client's capabilities in ``params._meta``
(``io.modelcontextprotocol/protocolVersion``,
``io.modelcontextprotocol/clientCapabilities``, optionally
``io.modelcontextprotocol/clientInfo``), the server answers each request on
its own, every result carries ``resultType``, and ``tools/list`` and
``server/discover`` results carry the cache hints ``ttlMs`` and ``cacheScope``
(spec 2026-07-28: basic/versioning, basic/index "ResultType", schema.ts
``RequestMetaObject``, ``DiscoverResult``, ``CacheableResult``,
``UnsupportedProtocolVersionError``).

:func:`serve_request` is the whole per-request rule set for one parsed
request, with no connection behind it: it returns the result to send, or the
:class:`ToolRun` to start, and raises the :class:`~securemcp.errors.RPCError`
to answer with. The WebSocket session (:class:`~securemcp.protocol.mcp.MCPSession`)
calls it for every enveloped request; a transport that carries one request per
exchange (Streamable HTTP) can call it the same way.

Pure like the rest of the core: no I/O, no clock, no threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..errors import InvalidParams, MethodNotFound, RPCError
from ..tools import Tool
from .jsonrpc import RequestId, is_request_id

if TYPE_CHECKING:
    from ..app import SecureMCP

__all__ = [
    "CLIENT_CAPABILITIES_KEY",
    "CLIENT_INFO_KEY",
    "MODERN_PROTOCOL_VERSIONS",
    "PROTOCOL_VERSION_KEY",
    "SERVER_DISCOVER",
    "SERVER_INFO_KEY",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "CacheHint",
    "Envelope",
    "ToolRun",
    "complete_result",
    "has_envelope",
    "read_envelope",
    "serve_enveloped",
    "serve_request",
    "unsupported_version",
]

MODERN_PROTOCOL_VERSIONS = ("2026-07-28",)
"""The stateless revisions SecureMCP speaks, oldest first (no ``initialize``)."""

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
"""The ``_meta`` key of a request's envelope that names its protocol revision."""
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
"""The ``_meta`` key of a request's envelope that carries the client's capabilities."""
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
"""The ``_meta`` key of a request's envelope that carries the client's name and version."""
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
"""The ``_meta`` key of a result that carries the server's name and version."""

SERVER_DISCOVER = "server/discover"
"""The method a 2026-07-28 client sends first: the server's versions and capabilities."""

UNSUPPORTED_PROTOCOL_VERSION = -32022
"""``UnsupportedProtocolVersionError``'s code (schema.ts, 2026-07-28)."""

_TOOLS_LIST = "tools/list"
_TOOLS_CALL = "tools/call"


@dataclass(frozen=True, slots=True)
class CacheHint:
    """``ttlMs`` and ``cacheScope`` for cacheable results (``tools/list``, ``server/discover``).

    The default, immediately stale and private, is always correct; a server
    whose tool list is the same for every caller may say ``"public"``.
    """

    ttl_ms: int = 0
    scope: Literal["public", "private"] = "private"

    def __post_init__(self) -> None:
        if isinstance(self.ttl_ms, bool) or not isinstance(self.ttl_ms, int) or self.ttl_ms < 0:
            raise ValueError(f"ttl_ms must be an integer >= 0, got {self.ttl_ms!r}")
        if self.scope not in ("public", "private"):
            raise ValueError(f"scope must be 'public' or 'private', got {self.scope!r}")


# Envelope and ToolRun are NamedTuples, not frozen dataclasses: made on every
# stateless call, and a frozen dataclass's __init__ sets each field through
# object.__setattr__ (2% of an M3 request's instructions for these two).
class Envelope(NamedTuple):
    """What one request says about its sender in ``params._meta``."""

    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any] | None = None


class ToolRun(NamedTuple):
    """A ``tools/call`` that passed every protocol check: run ``tool`` with ``arguments``.

    The arguments are not validated yet (validation errors are the model's to
    see, as a tool error result). Answer with
    :meth:`~securemcp.protocol.mcp.MCPSession.tool_answer` or, for a failure,
    :func:`complete_result` of a tool error result.
    """

    request_id: RequestId
    tool: Tool
    arguments: dict[str, Any] | None
    progress_token: RequestId | None
    envelope: Envelope


def has_envelope(params: Any) -> bool:
    """Whether ``params._meta`` holds the 2026-07-28 protocol-version key.

    That key (in the reserved ``io.modelcontextprotocol/`` prefix) is the sign
    of a stateless request: a legacy request's ``_meta`` holds at most a
    ``progressToken``. The key alone decides, so a half-built envelope is
    served as a stateless request and told what is missing.
    """
    if not isinstance(params, dict):
        return False
    meta = params.get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta


def unsupported_version(requested: Any, supported: Sequence[str]) -> RPCError:
    """The ``UnsupportedProtocolVersionError`` for ``requested``, listing ``supported``."""
    return RPCError(
        "Unsupported protocol version",
        code=UNSUPPORTED_PROTOCOL_VERSION,
        data={"supported": list(supported), "requested": requested},
    )


_ENVELOPE_KEYS = (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY)


def read_envelope(params: dict[str, Any], supported: Sequence[str]) -> Envelope:
    """Check ``params._meta``; raise InvalidParams for a malformed one, -32022 for a version.

    ``supported`` is what the -32022 error lists (newest first); only the
    revisions in :data:`MODERN_PROTOCOL_VERSIONS` are served here.
    """
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        raise InvalidParams(
            "Invalid params: 'params._meta' must be an object carrying "
            f"'{PROTOCOL_VERSION_KEY}' and '{CLIENT_CAPABILITIES_KEY}'"
        )
    if PROTOCOL_VERSION_KEY not in meta or CLIENT_CAPABILITIES_KEY not in meta:
        missing = [key for key in _ENVELOPE_KEYS if key not in meta]
        raise InvalidParams(f"Invalid params: '_meta' lacks {', '.join(map(repr, missing))}")
    version = meta[PROTOCOL_VERSION_KEY]
    if not isinstance(version, str):
        raise InvalidParams(f"Invalid params: '{PROTOCOL_VERSION_KEY}' must be a string")
    if version not in MODERN_PROTOCOL_VERSIONS:
        raise unsupported_version(version, supported)
    capabilities = meta[CLIENT_CAPABILITIES_KEY]
    if not isinstance(capabilities, dict):
        raise InvalidParams(f"Invalid params: '{CLIENT_CAPABILITIES_KEY}' must be an object")
    client_info = meta.get(CLIENT_INFO_KEY)
    if client_info is not None and not isinstance(client_info, dict):
        raise InvalidParams(f"Invalid params: '{CLIENT_INFO_KEY}' must be an object")
    return Envelope(version, capabilities, client_info)


def complete_result(result: dict[str, Any], server_info: dict[str, Any]) -> dict[str, Any]:
    """``result`` as a 2026-07-28 result: ``resultType`` and the server's identity in ``_meta``."""
    result["resultType"] = "complete"
    result["_meta"] = {SERVER_INFO_KEY: server_info}
    return result


def serve_request(
    request_id: RequestId,
    method: str,
    params: dict[str, Any],
    *,
    app: SecureMCP,
    supported: Sequence[str],
    list_tools: Callable[[dict[str, Any], str], dict[str, Any]],
    cache: CacheHint,
) -> dict[str, Any] | ToolRun:
    """Serve one 2026-07-28 request on its own: its result, or the tool call to run.

    ``params`` is the request's params object (``{}`` when absent); ``app``
    names the server and holds the tools; ``list_tools(params, version)``
    builds a ``tools/list`` page (``tools``, and ``nextCursor``) of the tools
    the caller may see; ``supported`` lists every revision the server speaks,
    newest first, for ``server/discover`` and the -32022 error. Raises the
    :class:`~securemcp.errors.RPCError` to answer with.

    This is :func:`read_envelope` then :func:`serve_enveloped`.
    """
    envelope = read_envelope(params, supported)
    return serve_enveloped(
        envelope,
        request_id,
        method,
        params,
        app=app,
        supported=supported,
        list_tools=list_tools,
        cache=cache,
    )


def serve_enveloped(
    envelope: Envelope,
    request_id: RequestId,
    method: str,
    params: dict[str, Any],
    *,
    app: SecureMCP,
    supported: Sequence[str],
    list_tools: Callable[[dict[str, Any], str], dict[str, Any]],
    cache: CacheHint,
) -> dict[str, Any] | ToolRun:
    """:func:`serve_request` for a request whose ``envelope`` was read already."""
    if method == _TOOLS_CALL:
        return _tool_run(request_id, params, envelope, app)
    server_info = {"name": app.name, "version": app.version}
    if method == SERVER_DISCOVER:
        result: dict[str, Any] = {
            "supportedVersions": list(supported),
            "capabilities": {"tools": {"listChanged": False}},
        }
        if app.description:
            result["instructions"] = app.description
        result["ttlMs"] = cache.ttl_ms
        result["cacheScope"] = cache.scope
        return complete_result(result, server_info)
    if method == _TOOLS_LIST:
        result = list_tools(params, envelope.protocol_version)
        result["ttlMs"] = cache.ttl_ms
        result["cacheScope"] = cache.scope
        return complete_result(result, server_info)
    # ping, initialize and everything else: not methods of this revision.
    raise MethodNotFound(f"Method not found: {method}")


def _tool_run(
    request_id: RequestId,
    params: dict[str, Any],
    envelope: Envelope,
    app: SecureMCP,
) -> ToolRun:
    name = params.get("name")
    if not isinstance(name, str):
        raise InvalidParams("Invalid params: 'name' must be a string")
    tool = app.get_tool(name)
    if tool is None:
        raise InvalidParams(f"Unknown tool: {name}")
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise InvalidParams("Invalid params: 'arguments' must be an object")
    meta = params["_meta"]
    token = meta.get("progressToken")
    if token is not None and not is_request_id(token):
        raise InvalidParams("Invalid params: 'progressToken' must be a string or an integer")
    return ToolRun(request_id, tool, arguments, token, envelope)
