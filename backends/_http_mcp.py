"""What MCP over Streamable HTTP asks of :class:`~securemcp.transport.HTTPClient`, without I/O.

- The headers a request carries: at 2026-07-28 ``MCP-Protocol-Version``,
  ``Mcp-Method``, ``Mcp-Name`` and a listed tool's ``Mcp-Param-*``, mirrored
  from the body (:mod:`securemcp.param_headers`: a value that is not printable
  ASCII goes as ``=?base64?...?=``); in a 2025-revision session the
  negotiated ``MCP-Protocol-Version`` and the ``Mcp-Session-Id``.
- What an answer means: an HTTP status without a JSON-RPC answer raises
  :class:`~securemcp.backends.http_client.HTTPRejected`, an error answer its
  :class:`~securemcp.errors.RPCError`; a result must be complete.
- Where an answer's event stream sends a notification: a call's progress to
  its ``on_progress``, anything else to ``on_notification``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from securemcp.errors import InternalError, error_for_code
from securemcp.param_headers import Path, encode, header_map, param_headers
from securemcp.protocol.mcp import TOOLS_CALL

from ._http_transport import Answer, Headers, HTTPRejected
from .mcp_client import ProgressCallback, check_result_type, parse_progress

__all__ = [
    "MODERN_PROTOCOL_VERSION",
    "CallProgress",
    "NotificationCallback",
    "answer_result",
    "deliver_notification",
    "learn_param_headers",
    "routing_headers",
    "session_headers",
]

logger = logging.getLogger("securemcp.client")

MODERN_PROTOCOL_VERSION = "2026-07-28"
"""The stateless revision: no handshake, a ``_meta`` envelope on every request."""

# The parameter that names what a request acts on, sent again as ``Mcp-Name``.
_NAME_PARAMS = {TOOLS_CALL: "name", "prompts/get": "name", "resources/read": "uri"}

NotificationCallback = Callable[[str, Any], "Awaitable[None] | None"]
"""``on_notification(method, params)`` for notifications that are not a call's progress."""

CallProgress = tuple[str | None, ProgressCallback] | None
"""A call's progress token and the callback its reports go to (``None``: it follows none)."""


def routing_headers(
    method: str, params: Any, param_maps: Mapping[str, Mapping[Path, str]] | None = None
) -> Headers:
    """The 2026-07-28 headers of a request of ``method`` with ``params``.

    For a ``tools/call`` of a tool in ``param_maps`` (name: its ``x-mcp-header``
    arguments, learnt from ``tools/list``), its ``Mcp-Param-*`` headers too.
    """
    headers = [("MCP-Protocol-Version", MODERN_PROTOCOL_VERSION), ("Mcp-Method", method)]
    key = _NAME_PARAMS.get(method)
    name = params.get(key) if key is not None and isinstance(params, Mapping) else None
    if isinstance(name, str):
        headers.append(("Mcp-Name", encode(name)))
        mirrored = None if param_maps is None or method != TOOLS_CALL else param_maps.get(name)
        if mirrored:
            headers += param_headers(mirrored, params.get("arguments"))
    return tuple(headers)


def learn_param_headers(
    tools: list[dict[str, Any]], param_maps: dict[str, Mapping[Path, str]]
) -> list[dict[str, Any]]:
    """``tools`` (a 2026-07-28 ``tools/list``) without those whose ``x-mcp-header`` breaks
    its rules, as the revision has a client do; the others' arguments to mirror go
    to ``param_maps``."""
    kept = []
    for tool in tools:
        name = tool.get("name")
        try:
            found = header_map(tool.get("inputSchema"))
        except ValueError as exc:
            logger.warning("leaving out tool %r: %s", name, exc)
            if isinstance(name, str):
                param_maps.pop(name, None)
            continue
        if isinstance(name, str):
            param_maps[name] = found
        kept.append(tool)
    return kept


def session_headers(protocol_version: str | None, session_id: str | None) -> Headers:
    """The headers of a request in a 2025-revision session (none before ``initialize``)."""
    headers: list[tuple[str, str]] = []
    if protocol_version is not None:
        headers.append(("MCP-Protocol-Version", protocol_version))
    if session_id is not None:
        headers.append(("Mcp-Session-Id", session_id))
    return tuple(headers)


def answer_result(answer: Answer, *, tool_call: bool, in_session: bool) -> Any:
    """The ``result`` of ``answer``, or the exception it stands for.

    ``in_session``: the request carried a 2025-revision ``Mcp-Session-Id``, so
    HTTP 404 means that the session is over.
    """
    message = answer.message
    status = answer.status
    if (
        status in (401, 403)
        or not isinstance(message, dict)
        # An HTTP error whose JSON body is no JSON-RPC answer (an OAuth error, say).
        or (status >= 400 and "error" not in message and "result" not in message)
        # The 2025 revisions: the session is over (expired, or deleted).
        or (status == 404 and in_session)
    ):
        raise HTTPRejected(status, answer.body, answer.headers)
    error = message.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        raise error_for_code(
            code if isinstance(code, int) else -32603,
            str(error.get("message", "")),
            error.get("data"),
            tool_call=tool_call,
        )
    if "result" not in message:
        raise InternalError("malformed answer: neither 'result' nor 'error'")
    result = message["result"]
    check_result_type(result)
    return result


async def deliver_notification(
    method: Any, params: Any, progress: CallProgress, handler: NotificationCallback | None
) -> None:
    """Hand one notification of an answer's event stream to whoever wants it.

    The call's own progress goes to its callback; anything else to ``handler``
    (whose exceptions are logged), or to the debug log without one.
    """
    if method == "notifications/progress" and progress is not None:
        parsed = parse_progress(params)
        if parsed is not None and parsed[0] == progress[0]:
            outcome = progress[1](parsed[1])
            if outcome is not None:
                await outcome
            return
    if handler is None:
        logger.debug("dropped notification %r (no on_notification)", method)
        return
    try:
        outcome2 = handler(str(method), params)
        if outcome2 is not None:
            await outcome2
    except Exception:
        logger.exception("on_notification raised for %r", method)
