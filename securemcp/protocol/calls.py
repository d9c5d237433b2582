"""Admitting one tool call: its caller's scopes, then its arguments, Context and Progress.

Shared by every way a call arrives (a WebSocket connection, one Streamable HTTP
request), so that each applies the same rules in the same order. Pure: no I/O.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..auth import authorize, check_scopes
from ..context import Context
from ..errors import InvalidParams, RPCError, ToolError
from ..progress import Progress
from ..tools import Tool
from .events import ToolCall
from .jsonrpc import RequestId
from .mcp_tools import TOOLS_CALL, tool_error_result

if TYPE_CHECKING:
    from ..auth import Principal
    from ..pubsub import Session

__all__ = ["authorize_call", "failure_answer", "prepare_call"]

logger = logging.getLogger("securemcp.protocol")
security_logger = logging.getLogger("securemcp.security")


def authorize_call(principal: Principal | None, tool: Tool) -> None:
    """Refuse (and log) a call to ``tool`` by a caller lacking its scopes: -31001/-31003.

    Checked before the arguments, so that a caller without the scopes learns
    nothing about the tool's parameters.
    """
    if not tool.scopes:
        return
    try:
        authorize(principal, tool.scopes)
    except RPCError as refusal:
        # Never the arguments: they are the caller's data, maybe secret.
        security_logger.warning(
            "call to %r refused (%d %s) for %s",
            tool.name,
            refusal.code,
            refusal.message,
            "anonymous" if principal is None else principal.subject,
        )
        raise


def prepare_call(
    principal: Principal | None,
    session: Session | None,
    request_id: RequestId,
    tool: Tool,
    arguments: Any,
    method: str,
    jsonrpc: bool,
    *,
    progress_token: RequestId | None = None,
    protocol_version: str | None = None,
) -> ToolCall:
    """The call of ``tool`` with ``arguments`` validated, its Context and Progress filled in."""
    kwargs = tool.validate(arguments)
    if tool.context_param is not None:
        kwargs[tool.context_param] = Context(principal, request_id, tool.name, session)
    progress: Progress | None = None
    if tool.progress_param is not None:
        # Always a Progress, so the tool need not care whether the caller listens.
        progress = kwargs[tool.progress_param] = Progress(progress_token)
    return ToolCall(request_id, tool, kwargs, method, jsonrpc, progress, protocol_version)


def failure_answer(call: ToolCall, exc: BaseException, *, mask_errors: bool) -> RPCError | Any:
    """What a failed ``call`` is answered with: the :class:`RPCError` to send as an
    error, or (an MCP ``tools/call`` whose tool failed) the error *result* to send.

    An exception that is not an RPCError becomes -32000; with ``mask_errors``
    its text is logged under a correlation id and only that id is sent.
    """
    if not isinstance(exc, RPCError):
        if mask_errors:
            correlation = secrets.token_hex(6)
            logger.error("tool %r failed [%s]", call.tool.name, correlation, exc_info=exc)
            exc = ToolError("Tool execution error", data={"correlation_id": correlation})
        else:
            exc = ToolError(f"Tool execution error: {exc}")
    if call.method == TOOLS_CALL and isinstance(exc, (ToolError, InvalidParams)):
        # MCP: a tool's failure is a result the model sees, not a protocol error.
        text = exc.message
        if isinstance(exc.data, dict) and "correlation_id" in exc.data:
            text += f" (correlation id {exc.data['correlation_id']})"
        return tool_error_result(text)
    return exc


def visible_tools(tools: Iterable[Tool], principal: Principal | None) -> list[Tool]:
    """The tools ``principal`` may call, the only ones it is shown.

    Listing the others would tell an attacker what to aim for, and a user
    nothing useful.
    """
    return [tool for tool in tools if not tool.scopes or check_scopes(principal, tool.scopes)]
