"""One MCP request over HTTP, seen as a connection by :class:`~securemcp.protocol.mcp.MCPSession`.

The session's rules (stateless 2026-07-28, legacy ``initialize``, ``tools/list``,
``tools/call``) are written against a :class:`~securemcp.protocol.ServerConnection`;
:class:`RequestView` gives them what they use of one for a single HTTP request:
the app, the limits, the principal's visible tools, and places to put the
answer and the tool call started (``backends/_http_serve.py`` runs it).
"""

from __future__ import annotations

from typing import Any

import pydantic_core

from securemcp.auth import Principal, authorize, check_scopes
from securemcp.context import Context
from securemcp.errors import RPCError
from securemcp.progress import Progress
from securemcp.protocol import ToolCall
from securemcp.protocol.jsonrpc import RequestId, dumps_bytes
from securemcp.tools import Tool

from ._security import security_logger

__all__ = ["TEXT", "RequestView", "error_body"]

TEXT = ("content-type", "text/plain; charset=utf-8")


class RequestView:
    """What an :class:`MCPSession` needs of a connection, for one HTTP request.

    The session's answers are collected (at most one: one request per POST);
    a tool call it starts is kept for the endpoint to run.
    """

    def __init__(self, app: Any, limits: Any, principal: Principal | None) -> None:
        self.app = app
        self.limits = limits
        self.principal = principal
        self.sent: list[bytes] = []
        self.call: ToolCall | None = None
        self.error_id: RequestId | None = None
        self.errored = False

    def _visible_tools(self) -> list[Tool]:
        return [
            tool
            for tool in self.app.tools.values()
            if not tool.scopes or check_scopes(self.principal, tool.scopes)
        ]

    def _send_json(self, value: Any) -> None:
        self.sent.append(dumps_bytes(value))

    def _answer_error(self, request_id: RequestId | None, exc: RPCError, jsonrpc: bool) -> None:
        self.errored = True
        self.error_id = request_id
        self.sent.append(error_body(request_id, exc))

    def _cancel_call(self, request_id: RequestId, reason: str | None) -> None:
        """``notifications/cancelled``: each call is its own exchange (close it to cancel)."""

    def _start_call(
        self,
        request_id: RequestId,
        tool: Tool,
        arguments: Any,
        method: str,
        jsonrpc: bool,
        *,
        progress_token: RequestId | None = None,
        protocol_version: str | None = None,
    ) -> ToolCall:
        # As ServerConnection._start_call: scopes first, then the arguments.
        if tool.scopes:
            try:
                authorize(self.principal, tool.scopes)
            except RPCError as refusal:
                security_logger.warning(
                    "call to %r refused (%d %s) for %s",
                    tool.name,
                    refusal.code,
                    refusal.message,
                    "anonymous" if self.principal is None else self.principal.subject,
                )
                raise
        kwargs = tool.validate(arguments)
        if tool.context_param is not None:
            kwargs[tool.context_param] = Context(self.principal, request_id, tool.name, None)
        progress: Progress | None = None
        if tool.progress_param is not None:
            progress = kwargs[tool.progress_param] = Progress(progress_token)
        call = ToolCall(request_id, tool, kwargs, method, jsonrpc, progress, protocol_version)
        self.call = call
        return call


def error_body(request_id: RequestId | None, exc: RPCError) -> bytes:
    """The JSON-RPC error answer to ``request_id`` (``data`` dropped if JSON cannot hold it)."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    answer = {"jsonrpc": "2.0", "id": request_id, "error": error}
    try:
        return dumps_bytes(answer)
    except pydantic_core.PydanticSerializationError:
        error.pop("data", None)
        return dumps_bytes(answer)
