"""Admitting one tool call: its caller's scopes, then its arguments, Context and Progress.

Shared by every way a call arrives (a WebSocket connection, one Streamable HTTP
request), so that each applies the same rules in the same order. Pure: no I/O.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..auth import authorize
from ..context import Context
from ..errors import RPCError
from ..progress import Progress
from ..tools import Tool
from .events import ToolCall
from .jsonrpc import RequestId

if TYPE_CHECKING:
    from ..auth import Principal
    from ..pubsub import Session

__all__ = ["authorize_call", "prepare_call"]

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
