"""The seed dialect of a server connection: the original system's methods and envelopes.

``{"id", "method", "params"}`` requests (``"jsonrpc": "2.0"`` allowed, and then
echoed), answered ``{"id", "result"}`` or ``{"id", "error"}``; the methods
``ping``, ``list_tools`` and ``invoke_tool`` with the original server's error
texts. A :class:`~securemcp.protocol.ServerConnection` speaks it unless the
client negotiated MCP; the functions here hold no state of their own, so a
seed connection costs nothing for its dialect.

Pure like the rest of the core: no I/O, no clock, no threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..errors import InvalidParams, InvalidRequest, MethodNotFound, RPCError, ToolNotFound
from .jsonrpc import RequestId, is_request_id

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["SUBPROTOCOL", "on_message"]

SUBPROTOCOL = "securemcp.seed"
"""The WebSocket subprotocol that names the seed dialect.

A seed client needs none (a connection without a subprotocol speaks it), but a
browser that sends its token the only way it can, as a ``bearer.<token>``
entry of the subprotocol list, must name a real subprotocol beside it, which
the server answers with (never the token): ``new WebSocket(url,
["securemcp.seed", "bearer." + token])``.
"""

_NO_ANSWER: Any = object()
"""Returned by a method handler whose answer comes later (a tool call)."""

Handler = Callable[["ServerConnection", RequestId, Any, bool], Any]


def on_message(conn: ServerConnection, message: Any) -> None:
    """Handle one parsed seed-dialect message on ``conn``: answer it or start a call."""
    if not isinstance(message, dict):
        reason = (
            "batch requests are not supported"
            if isinstance(message, list)
            else ("expected a JSON object")
        )
        conn._answer_error(None, InvalidRequest(f"Invalid Request: {reason}"), False)
        return

    jsonrpc = message.get("jsonrpc") == "2.0"
    request_id = message.get("id")
    method = message.get("method")
    if "id" in message and not is_request_id(request_id):
        if method is None and ("result" in message or "error" in message):
            return  # An answer to nothing we asked: ignore it.
        conn._answer_error(
            None,
            InvalidRequest("Invalid Request: 'id' must be a string or an integer"),
            jsonrpc,
        )
        return
    if not isinstance(method, str):
        if "result" in message or "error" in message:
            return  # An answer to nothing we asked: ignore it.
        conn._answer_error(
            request_id, InvalidRequest("Invalid Request: 'method' must be a string"), jsonrpc
        )
        return
    if "jsonrpc" in message and not jsonrpc:
        conn._answer_error(
            request_id, InvalidRequest("Invalid Request: 'jsonrpc' must be \"2.0\""), False
        )
        return
    if "id" not in message:
        return  # A notification: never answered, and no notification is defined yet.

    handler = _METHODS.get(method)
    request_id = cast(RequestId, request_id)  # checked above
    try:
        if handler is None:
            raise MethodNotFound(f"Unknown method: {method}")
        result = handler(conn, request_id, message.get("params"), jsonrpc)
    except RPCError as exc:
        conn._answer_error(request_id, exc, jsonrpc)
        return
    if result is not _NO_ANSWER:
        answer: dict[str, Any] = {"jsonrpc": "2.0"} if jsonrpc else {}
        answer["id"] = request_id
        answer["result"] = result
        conn._send_json(answer)


def _ping(conn: ServerConnection, request_id: RequestId, params: Any, jsonrpc: bool) -> Any:
    return {"pong": True}


def _list_tools(conn: ServerConnection, request_id: RequestId, params: Any, jsonrpc: bool) -> Any:
    return {"tools": [tool.metadata() for tool in conn._visible_tools()]}


def _invoke_tool(conn: ServerConnection, request_id: RequestId, params: Any, jsonrpc: bool) -> Any:
    if not isinstance(params, dict):
        raise InvalidParams("Invalid params: expected an object with 'tool_name' and 'params'")
    name = params.get("tool_name")
    if not name:
        raise InvalidParams("Missing tool_name in params")
    if not isinstance(name, str):
        raise InvalidParams("Invalid params: 'tool_name' must be a string")
    tool = conn.app.get_tool(name)
    if tool is None:
        raise ToolNotFound(f"Tool not found: {name}")
    conn._start_call(request_id, tool, params.get("params"), "invoke_tool", jsonrpc)
    return _NO_ANSWER


_METHODS: dict[str, Handler] = {
    "ping": _ping,
    "list_tools": _list_tools,
    "invoke_tool": _invoke_tool,
}
