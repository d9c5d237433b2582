"""One MCP request over HTTP, seen as a connection by :class:`~securemcp.protocol.mcp.MCPSession`.

The session's rules (stateless 2026-07-28, legacy ``initialize``, ``tools/list``,
``tools/call``) are written against a :class:`~securemcp.protocol.ServerConnection`;
:class:`RequestView` gives them what they use of one for a single HTTP request:
the app, the limits, the principal's visible tools, and places to put the
answer and the tool call started (``backends/_http_serve.py`` runs it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic_core

from securemcp.auth import Principal, authorize, check_scopes
from securemcp.context import Context
from securemcp.errors import RPCError
from securemcp.progress import Progress
from securemcp.protocol import ToolCall
from securemcp.protocol.jsonrpc import RequestId, dumps_bytes
from securemcp.pubsub import Broker, check_topic
from securemcp.tools import Tool

from ._pubsub import LoopThread
from ._security import security_logger

__all__ = ["TEXT", "RequestSession", "RequestView", "error_body"]

_T = TypeVar("_T")

TEXT = ("content-type", "text/plain; charset=utf-8")


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
        if threading.get_ident() == self._loop.thread:
            return fn(*args)
        return self._loop.run(fn, *args)

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
            kwargs[tool.context_param] = Context(
                self.principal, request_id, tool.name, self.session
            )
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
