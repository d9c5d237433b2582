"""One MCP request over HTTP, seen as a connection by :class:`~securemcp.protocol.mcp.MCPSession`.

The session's rules (stateless 2026-07-28, legacy ``initialize``, ``tools/list``,
``tools/call``) are written against a :class:`~securemcp.protocol.ServerConnection`;
:class:`RequestView` gives them what they use of one for a single HTTP request:
the app, the limits, the principal's visible tools, and places to put the
answer and the tool call started (``backends/_http_calls.py`` runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pydantic_core

from securemcp.auth import Principal
from securemcp.errors import ErrorCode, RPCError
from securemcp.param_headers import PREFIX, decode, mismatch
from securemcp.protocol import ToolCall, http_write
from securemcp.protocol.calls import authorize_call, prepare_call, visible_tools
from securemcp.protocol.jsonrpc import RequestId, dumps_bytes
from securemcp.pubsub import Broker, check_topic
from securemcp.security import HandshakeRefused
from securemcp.tools import Tool

from ._pubsub import LoopThread

__all__ = [
    "HEADER_MISMATCH",
    "TEXT",
    "RequestSession",
    "RequestView",
    "error_body",
    "header_mismatch",
    "origin_path",
    "refusal_answer",
]

HEADER_MISMATCH = -32020
"""2026-07-28 Streamable HTTP: the routing headers are missing or disagree with the body."""

_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose target is mirrored in ``Mcp-Name``, and the params key holding it."""
_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
_T = TypeVar("_T")

_REFUSAL_CODES = {
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    429: ErrorCode.OVERLOADED,  # over a connection cap
    503: ErrorCode.UNAVAILABLE,  # full, or shutting down
}

TEXT = ("content-type", http_write.TEXT_PLAIN)


class RequestSession:
    """The broadcast seen from one HTTP request: it may publish, not subscribe.

    A request has no connection to deliver notifications to afterwards, so
    ``ctx.subscribe`` is refused with a clear error; ``ctx.publish`` reaches
    every subscriber of the broker (WebSocket connections, other processes
    through a shared broker), from the loop or from a sync tool's thread.
    """

    __slots__ = ("_broker", "_loop")

    def __init__(self, broker: Broker, loop: LoopThread) -> None:
        self._broker = broker
        self._loop = loop

    def _on_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        return self._loop.call(fn, *args)

    def subscribe(self, topic: str) -> None:
        """Refused: an HTTP request cannot receive notifications once answered."""
        check_topic(topic)
        raise RuntimeError("subscribing needs a persistent connection (WebSocket), not HTTP")

    def unsubscribe(self, topic: str) -> bool:
        """Nothing to leave: a request never subscribes."""
        return False

    async def live(self) -> bool:
        """No subscription to wait for."""
        return True

    def publish(self, topic: str, method: str, params: Any = None) -> int:
        """Publish ``method(params)`` to ``topic``'s subscribers; how many (local) got it."""
        return self._on_loop(self._broker.publish, topic, method, params)

    def subscriber_count(self, topic: str) -> int:
        """How many connections follow ``topic``."""
        return self._on_loop(self._broker.subscriber_count, topic)

    def topics(self) -> list[str]:
        """The topics that have at least one subscriber."""
        return self._on_loop(self._broker.topics)

    @property
    def subscriptions(self) -> frozenset[str]:
        """None: a request never subscribes."""
        return frozenset()


class RequestView:
    """What an :class:`MCPSession` needs of a connection, for one HTTP request.

    The session's answers are collected (at most one: one request per POST);
    a tool call it starts is kept for the endpoint to run.
    """

    def __init__(
        self,
        app: Any,
        limits: Any,
        principal: Principal | None,
        session: RequestSession | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.principal = principal
        self.session = session
        self.sent: list[bytes] = []
        self.call: ToolCall | None = None
        self.error_id: RequestId | None = None
        self.errored = False

    def _visible_tools(self) -> list[Tool]:
        return visible_tools(self.app.tools.values(), self.principal)

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
        authorize_call(self.principal, tool)
        call = prepare_call(
            self.principal,
            self.session,
            request_id,
            tool,
            arguments,
            method,
            jsonrpc,
            progress_token=progress_token,
            protocol_version=protocol_version,
        )
        self.call = call
        return call


def header_mismatch(
    request: Any,
    message: dict[str, Any],
    get_tool: Callable[[str], Tool | None] | None = None,
    principal: Principal | None = None,
) -> str | None:
    """Why a 2026-07-28 request's routing headers fail its body, or ``None``.

    ``MCP-Protocol-Version`` must equal the envelope's version, ``Mcp-Method``
    the body's method, and ``Mcp-Name`` (verbatim, or base64 in
    ``=?base64?...?=``) the named target of ``tools/call``, ``prompts/get`` and
    ``resources/read``, and each ``Mcp-Param-*`` header the called tool's
    ``x-mcp-header`` arguments (given ``get_tool``): intermediaries route on the
    headers, the server runs the body, and the two must never disagree.
    """
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = (
        meta.get("io.modelcontextprotocol/protocolVersion") if isinstance(meta, dict) else None
    )
    if request.header("mcp-protocol-version") != version:
        return "MCP-Protocol-Version does not match the request's protocol version"
    method = message.get("method")
    if request.header("mcp-method") != method:
        return "Mcp-Method is missing or does not match the request's method"
    key = _NAMED.get(method) if isinstance(method, str) else None
    if key is not None and isinstance(params, dict):
        name = _decoded(request.header("mcp-name"))
        if name is None or name != params.get(key):
            return "Mcp-Name is missing or does not match the request's target"
    if method == "tools/call" and get_tool is not None and isinstance(params, dict):
        tool = get_tool(params["name"])  # a string: Mcp-Name matched it
        if tool is not None and tool.param_headers:
            return _param_mismatch(request, params, tool, principal)
    return None


def _param_mismatch(
    request: Any, params: dict[str, Any], tool: Tool, principal: Principal | None
) -> str | None:
    """Why the ``Mcp-Param-*`` headers fail the arguments of ``tool``, or ``None``.

    Only a tool the caller may see is checked: for any other the call's own
    answer (unknown tool) must not differ by what its schema says.
    """
    if not visible_tools((tool,), principal):
        return None
    sent: dict[str, list[str]] = {}
    for name, value in request.headers:
        if name.startswith(PREFIX):
            sent.setdefault(name, []).append(value)
    return mismatch(tool.param_headers, params.get("arguments"), sent)


def origin_path(target: str) -> str:
    """The path of a request target in absolute form (``http://host/path``), which
    RFC 9112 3.2.2 has a server accept; any other form not starting with ``/`` as it is."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return target
    slash = rest.find("/")
    return "/" if slash < 0 else rest[slash:]


def _decoded(value: str | None) -> str | None:
    """A header value as sent: verbatim, or the UTF-8 text of its base64 form."""
    # decode() checks the prefix too; testing it here first saves a call for the
    # usual plain value, once per 2026-07-28 request.
    return value if value is None or value[:2] != "=?" else decode(value)


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


def refusal_answer(refusal: HandshakeRefused) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of a refused MCP request: its status keeps its meaning.

    The body is a JSON-RPC error (-31001 for 401, -31003 for 403, as on the
    WebSocket; -31013 for 429 over a connection cap, -31503 for 503), which
    MCP clients show for a non-2xx answer (the SDK 2.x client does), rather
    than a bare "server returned an error".
    """
    code = _REFUSAL_CODES.get(refusal.status, ErrorCode.INVALID_REQUEST)
    reason = refusal.reason[:1].upper() + refusal.reason[1:]
    error = RPCError(f"{reason} (HTTP {refusal.status})", code=code)
    return error_body(None, error), [*refusal.headers, ("content-type", "application/json")]
