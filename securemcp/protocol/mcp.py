"""The MCP dialect of a server connection: lifecycle, tools, cancellation, progress.

A :class:`~securemcp.protocol.ServerConnection` speaks MCP when the client
negotiated the ``mcp`` subprotocol (or opened with a JSON-RPC 2.0
``initialize``); this module holds what that dialect adds to the connection:
strict JSON-RPC 2.0 envelopes with MCP's id rules, the ``initialize`` /
``notifications/initialized`` lifecycle with version negotiation, ``ping``,
``tools/list`` with cursor pagination, ``tools/call`` with MCP result shapes,
``notifications/cancelled`` and ``notifications/progress``; and the stateless
revision 2026-07-28. The handshake revisions' rules (``initialize``, what each
revision shows) are in :mod:`.mcp_handshake`, the stateless revision's
per-request rules in :mod:`.mcp_stateless`, the wire form of tool pages and
call answers in :mod:`.mcp_tools`.

Which era a connection speaks is decided by the first request that names one:
``initialize`` makes it a legacy (handshake) connection, a request carrying the
2026-07-28 ``_meta`` envelope a stateless one. Each then refuses the other's
requests: ``initialize`` on a stateless connection gets -32022 (unsupported
protocol version) listing the stateless revisions, an enveloped request on a
legacy connection gets -32600. Until one of them arrives, requests get the
legacy answers (``ping`` is answered, anything else is "not initialized").

Pure like the rest of the core: no I/O, no clock, no threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidParams, InvalidRequest, MethodNotFound, RPCError
from ..tools import Tool
from .jsonrpc import RequestId, is_request_id, loads
from .mcp_handshake import (
    ANNOTATIONS_AND_MESSAGES,
    LATEST_PROTOCOL_VERSION,
    PROTOCOL_VERSIONS,
    TITLES_AND_OUTPUT,
    UnsupportedProtocolVersion,
    answer_initialize,
    at_least,
    describe_tool,
)
from .mcp_stateless import (
    MODERN_PROTOCOL_VERSIONS,
    CacheHint,
    ToolRun,
    complete_result,
    has_envelope,
    read_envelope,
    serve_enveloped,
    unsupported_version,
)
from .mcp_tools import (
    LEGACY_TAIL,
    TOOLS_CALL,
    TOOLS_PAGE_SIZE,
    answer_parts,
    complete_tail,
    tool_error_result,
    tools_page,
    validation_text,
)

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = [
    "LATEST_PROTOCOL_VERSION",
    "MODERN_PROTOCOL_VERSIONS",
    "PROTOCOL_VERSIONS",
    "SUPPORTED_VERSIONS",
    "SUBPROTOCOL",
    "TOOLS_CALL",
    "TOOLS_PAGE_SIZE",
    "MCPSession",
    "UnsupportedProtocolVersion",
    "tool_error_result",
]

SUBPROTOCOL = "mcp"
"""The WebSocket subprotocol that selects the MCP dialect (as the official SDKs use it)."""

SUPPORTED_VERSIONS = (*reversed(MODERN_PROTOCOL_VERSIONS), *reversed(PROTOCOL_VERSIONS))
"""Every revision, newest first: ``server/discover``'s ``supportedVersions`` and
what a -32022 error lists on a connection whose era is not decided yet."""

MODERN_NEWEST_FIRST = tuple(reversed(MODERN_PROTOCOL_VERSIONS))
"""What a stateless connection still serves (its -32022 errors list these)."""

NO_ANSWER: Any = object()
"""Returned by a handler whose answer comes later (a tool call)."""

_NO_CACHE = CacheHint()
"""The default cache hint (immutable, so every session shares it)."""


class MCPSession:
    """The MCP state of one server connection: negotiated revision, lifecycle, paging.

    Created by the connection when it starts speaking MCP; read it as
    :attr:`ServerConnection.mcp`.
    """

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self.page_size = TOOLS_PAGE_SIZE
        """Tools per ``tools/list`` page."""
        self.protocol_version: str | None = None
        """The negotiated revision, once ``initialize`` was answered."""
        self.client_info: dict[str, Any] | None = None
        """The client's ``clientInfo`` (name, version ...), as it sent it."""
        self.client_capabilities: dict[str, Any] = {}
        """The client's ``capabilities``, as it sent them."""
        self.initialized = False
        """Whether ``notifications/initialized`` arrived: requests are served from then on."""
        self.stateless = False
        """Whether the connection speaks 2026-07-28: a request with its ``_meta`` envelope
        was served before any ``initialize`` (each request then carries its own version)."""
        self.cache_hint = _NO_CACHE
        """``ttlMs`` and ``cacheScope`` of 2026-07-28 ``tools/list`` and ``server/discover``."""
        self._server_info: dict[str, Any] = {"name": conn.app.name, "version": conn.app.version}

    # Envelopes

    def on_text(self, data: bytes) -> None:
        """Handle one complete text message (its UTF-8 bytes)."""
        try:
            message = loads(data, self._conn.limits.max_json_depth)
        except RPCError as exc:
            self._conn._parse_failed(data, exc, True)
            return
        self.on_message(message)

    def on_message(self, message: Any) -> None:
        """Handle one parsed JSON message: answer it, start a call, or note a notification."""
        if not isinstance(message, dict):
            reason = (
                "batch requests are not supported"
                if isinstance(message, list)
                else ("expected a JSON object")
            )
            self._answer_error(None, InvalidRequest(f"Invalid Request: {reason}"))
            return
        request_id = message.get("id")
        method = message.get("method")
        answer_id = request_id if is_request_id(request_id) else None
        if method is None and ("result" in message or "error" in message):
            return  # An answer to nothing we asked (the server sends no requests).
        if message.get("jsonrpc") != "2.0":
            self._answer_error(
                answer_id, InvalidRequest("Invalid Request: 'jsonrpc' must be \"2.0\"")
            )
            return
        if not isinstance(method, str):
            self._answer_error(
                answer_id, InvalidRequest("Invalid Request: 'method' must be a string")
            )
            return
        params = message.get("params")
        if "id" not in message:
            self._on_notification(method, params)
            return
        if answer_id is None:
            self._answer_error(
                None, InvalidRequest("Invalid Request: 'id' must be a string or an integer")
            )
            return
        try:
            if params is not None and not isinstance(params, dict):
                raise InvalidParams("Invalid params: 'params' must be an object")
            params = params or {}
            if (
                self.protocol_version is None
                and method != "initialize"
                and (self.stateless or has_envelope(params))
            ):
                result = self._serve_stateless(answer_id, method, params)
            else:
                result = self._dispatch(answer_id, method, params)
        except RPCError as exc:
            self._answer_error(answer_id, exc)
            return
        if result is not NO_ANSWER:
            self._conn._send_json({"jsonrpc": "2.0", "id": answer_id, "result": result})

    def _answer_error(self, request_id: RequestId | None, exc: RPCError) -> None:
        self._conn._answer_error(request_id, exc, True)

    def _dispatch(self, request_id: RequestId, method: str, params: dict[str, Any]) -> Any:
        if method == "ping":
            return {}
        if method == "initialize":
            if self.stateless:
                # The handshake does not exist at 2026-07-28 (SDK 2.x answers the same).
                raise unsupported_version(params.get("protocolVersion"), MODERN_NEWEST_FIRST)
            return self._initialize(params)
        if has_envelope(params):
            raise InvalidRequest(
                "Invalid Request: this connection was opened with initialize; "
                "requests carrying the 2026-07-28 _meta envelope are not served on it"
            )
        if not self.initialized:
            raise InvalidRequest(
                "Invalid Request: the session is not initialized "
                "(send initialize, then notifications/initialized)"
            )
        if method == "tools/list":
            return self._tools_list(params)
        if method == TOOLS_CALL:
            return self._tools_call(request_id, params)
        raise MethodNotFound(f"Method not found: {method}")

    def _on_notification(self, method: str, params: Any) -> None:
        # Never answered, even when malformed: the sender expects nothing back.
        if method == "notifications/initialized":
            if self.protocol_version is not None:
                self.initialized = True
        elif method == "notifications/cancelled" and isinstance(params, dict):
            request_id = params.get("requestId")
            reason = params.get("reason")
            if is_request_id(request_id):
                self._conn._cancel_call(request_id, reason if isinstance(reason, str) else None)

    # Lifecycle

    def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.protocol_version is not None:
            raise InvalidRequest("Invalid Request: initialize was already received")
        handshake = answer_initialize(params, self._server_info, self._conn.app.description)
        self.client_capabilities = handshake.client_capabilities
        self.client_info = handshake.client_info
        self.protocol_version = handshake.protocol_version
        return handshake.result

    def _at_least(self, revision: str, version: str | None = None) -> bool:
        return at_least(revision, self.protocol_version if version is None else version)

    # 2026-07-28

    def _serve_stateless(self, request_id: RequestId, method: str, params: dict[str, Any]) -> Any:
        # Until the connection is stateless, a -32022 lists the handshake
        # revisions too: the client may still open with initialize.
        servable = MODERN_NEWEST_FIRST if self.stateless else SUPPORTED_VERSIONS
        envelope = read_envelope(params, servable)
        # A well-formed envelope decides the era, whatever becomes of the request.
        self.stateless = True
        outcome = serve_enveloped(
            envelope,
            request_id,
            method,
            params,
            app=self._conn.app,
            supported=SUPPORTED_VERSIONS,
            list_tools=self._tools_list,
            cache=self.cache_hint,
        )
        if not isinstance(outcome, ToolRun):
            return outcome
        try:
            self._conn._start_call(
                request_id,
                outcome.tool,
                outcome.arguments,
                TOOLS_CALL,
                True,
                progress_token=outcome.progress_token,
                protocol_version=outcome.envelope.protocol_version,
            )
        except InvalidParams as exc:
            return self.stamp(tool_error_result(validation_text(exc)))
        return NO_ANSWER

    def stamp(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` as a 2026-07-28 result (``resultType``, ``serverInfo`` in ``_meta``)."""
        return complete_result(result, self._server_info)

    # Tools

    def describe(self, tool: Tool, version: str | None = None) -> dict[str, Any]:
        """``tool`` as an MCP tool object for ``version`` (default: the negotiated revision)."""
        return describe_tool(tool, self.protocol_version if version is None else version)

    def _tools_list(self, params: dict[str, Any], version: str | None = None) -> dict[str, Any]:
        tools = self._conn._visible_tools()
        page, next_cursor = tools_page(tools, params.get("cursor"), self.page_size)
        result: dict[str, Any] = {"tools": [self.describe(tool, version) for tool in page]}
        if next_cursor is not None:
            result["nextCursor"] = next_cursor
        return result

    def _tools_call(self, request_id: RequestId, params: dict[str, Any]) -> Any:
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidParams("Invalid params: 'name' must be a string")
        tool = self._conn.app.get_tool(name)
        if tool is None:
            raise InvalidParams(f"Unknown tool: {name}")
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise InvalidParams("Invalid params: 'arguments' must be an object")
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None and not is_request_id(token):
            raise InvalidParams("Invalid params: 'progressToken' must be a string or an integer")
        try:
            self._conn._start_call(
                request_id, tool, arguments, TOOLS_CALL, True, progress_token=token
            )
        except InvalidParams as exc:
            # Bad arguments are the model's to see and fix (2025-11-25, SEP-1303).
            return tool_error_result(validation_text(exc))
        return NO_ANSWER

    def tool_answer(
        self, request_id: RequestId, tool: Tool, result: Any, *, version: str | None = None
    ) -> list[bytes]:
        """The whole ``tools/call`` answer for a tool that returned ``result``, in parts.

        ``version`` is the revision a 2026-07-28 request named (``None``: the
        negotiated one); see :func:`~securemcp.protocol.mcp_tools.answer_parts`.
        """
        structured = tool.output_schema is not None and self._at_least(TITLES_AND_OUTPUT, version)
        if version is None:
            return answer_parts(request_id, result, structured, LEGACY_TAIL)
        info = self._server_info
        return answer_parts(
            request_id, result, structured, complete_tail(info["name"], info["version"])
        )

    # Progress

    def send_progress(
        self,
        token: RequestId,
        progress: float,
        total: float | None,
        message: str | None,
        *,
        version: str | None = None,
    ) -> None:
        """Write one ``notifications/progress`` (for a call of ``version``, else the session's)."""
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None and self._at_least(ANNOTATIONS_AND_MESSAGES, version):
            params["message"] = message
        self._conn._send_json(
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}
        )
