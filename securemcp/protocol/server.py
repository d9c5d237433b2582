"""The server side of one connection: tool calls and their answers, MCP, server push.

The upgrade itself is :class:`~securemcp.protocol.upgrade.ServerHandshake`'s; the
seed dialect's methods are in :mod:`.seed`, MCP's in :mod:`.mcp`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pydantic_core

from ..app import SecureMCP
from ..errors import (
    InternalError,
    InvalidRequest,
    LocalProtocolError,
    RPCError,
)
from ..tools import Tool
from . import seed
from .calls import authorize_call, failure_answer, prepare_call, visible_tools
from .connection import ConnectionState
from .events import CallCancelled, ToolCall
from .jsonrpc import RequestId, dumps_bytes, is_utf8, loads
from .limits import Limits
from .mcp import SUBPROTOCOL, TOOLS_CALL, MCPSession
from .mcp_stateless import has_envelope
from .upgrade import ServerHandshake

if TYPE_CHECKING:
    from ..pubsub import Session

__all__ = ["ServerConnection"]

logger = logging.getLogger("securemcp.protocol")
security_logger = logging.getLogger("securemcp.security")
"""Refused calls (missing scopes) are security events, logged where the backends log theirs."""


class ServerConnection(ServerHandshake):
    """The sans-I/O server side of one WebSocket connection serving ``app``.

    Drive it like this: feed ``receive_data(bytes)``; act on
    ``events_received()`` (answer a :class:`HandshakeRequest` with
    :meth:`accept` or :meth:`reject`, run each :class:`ToolCall` and answer it
    with :meth:`complete` or :meth:`fail`); write ``data_to_send()``. Check
    events and output after every call, since answering a call can unpause
    buffered requests.
    """

    __slots__ = (
        "_calls",
        "_cancelled",
        "_mcp",
        "_seen_message",
        "app",
        "mask_errors",
        "session",
    )

    def __init__(
        self,
        app: SecureMCP,
        *,
        limits: Limits | None = None,
        mask_errors: bool = False,
        http: bool = False,
        http_methods: Iterable[str] | None = None,
    ) -> None:
        # With http, a plain GET becomes an HTTPRequest event for the driver
        # to answer (a page next to the WebSocket endpoint) instead of a 400.
        # With http_methods (off by default), a first request that is no
        # upgrade makes the connection a keep-alive sequence of plain HTTP
        # requests in those methods: HTTPRequestReceived events, answered
        # through the ``http`` attribute (see securemcp.protocol.http).
        super().__init__(limits, http=http, http_methods=http_methods)
        self.app = app
        self.session: Session | None = None
        """The driver's broadcast session for this connection, handed to tools in
        their :class:`~securemcp.Context` (``None``: no broadcast)."""
        self.mask_errors = mask_errors
        """Hide tool exception texts and internal errors behind a correlation id."""
        self._calls: dict[RequestId, ToolCall] = {}
        # Calls the client cancelled, still in _calls until the backend answers them.
        # Created on first use: most connections never see a cancellation.
        self._cancelled: set[RequestId] | None = None
        self._mcp: MCPSession | None = None
        self._seen_message = False

    # The upgrade

    def _on_accepted(self, subprotocol: str | None, welcome: bool) -> None:
        if subprotocol == SUBPROTOCOL:
            self._mcp = MCPSession(self)
        elif welcome:
            self._send_json(
                {
                    "id": "welcome",
                    "result": {
                        "message": f"Connected to {self.app.name}",
                        "tools": [tool.name for tool in self._visible_tools()],
                    },
                }
            )

    def _may_process(self) -> bool:
        return (
            not self._deciding()
            and len(self._calls) < self.limits.max_in_flight
            and self._output.size < self.limits.max_pending_output
        )

    def _unanswered(self) -> tuple[RequestId, ...]:
        ids = tuple(self._calls)
        for call in self._calls.values():
            if call.progress is not None:
                call.progress.close()
        self._calls.clear()
        self._cancelled = None
        return ids

    # MCP

    @property
    def mcp(self) -> MCPSession | None:
        """The MCP session (negotiated version, client info) when the connection speaks MCP."""
        return self._mcp

    def report_progress(
        self,
        call: ToolCall,
        progress: float,
        total: float | None = None,
        message: str | None = None,
    ) -> bool:
        """Send an MCP progress notification for ``call``; return whether it went out.

        The driver routes :class:`~securemcp.Progress` reports here, on the
        connection's own thread. Nothing is sent when the caller gave no
        progress token, once the call is answered or cancelled, or while the
        output buffer is over its limit (progress is advisory). A value not
        greater than the previous one raises ``ValueError``.
        """
        reporter = call.progress
        if (
            reporter is None
            or reporter.token is None
            or self._mcp is None
            or self._state is not ConnectionState.OPEN
            or self._calls.get(call.id) is not call
            or (self._cancelled is not None and call.id in self._cancelled)
        ):
            return False
        if reporter.last is not None and not progress > reporter.last:
            raise ValueError(f"progress must increase: {progress!r} after {reporter.last!r}")
        if self._output.size >= self.limits.max_pending_output:
            return False
        reporter.last = progress
        self._mcp.send_progress(
            reporter.token, progress, total, message, version=call.protocol_version
        )
        return True

    def _cancel_call(self, request_id: RequestId, reason: str | None) -> None:
        # Unknown or finished calls are ignored: the answer may have crossed the
        # notification on the wire.
        call = self._calls.get(request_id)
        if call is None or (self._cancelled is not None and request_id in self._cancelled):
            return
        if self._cancelled is None:
            self._cancelled = set()
        self._cancelled.add(request_id)
        if call.progress is not None:
            call.progress.close()
        self._events.append(CallCancelled(call, reason))

    # Tool calls

    @property
    def calls_in_flight(self) -> int:
        """How many tool calls await ``complete()`` or ``fail()``."""
        return len(self._calls)

    def complete(self, call: ToolCall, result: Any) -> None:
        """Answer ``call`` with the tool's ``result`` (any JSON-serialisable value)."""
        if not self._take(call):
            return
        try:
            if call.method == TOOLS_CALL and self._mcp is not None:
                parts = self._mcp.tool_answer(
                    call.id, call.tool, result, version=call.protocol_version
                )
            elif call.jsonrpc:
                parts = [dumps_bytes({"jsonrpc": "2.0", "id": call.id, "result": result})]
            else:
                parts = [dumps_bytes({"id": call.id, "result": result})]
        except pydantic_core.PydanticSerializationError as exc:
            # Serialisation happens before anything is written, so nothing partial went out.
            self._answer_error(
                call.id,
                self._internal_error(
                    f"tool {call.tool.name!r} returned a value JSON cannot hold", exc
                ),
                call.jsonrpc,
            )
        else:
            self._send_payload(*parts)
        if self._held:
            self._process()

    def fail(self, call: ToolCall, exc: BaseException) -> None:
        """Answer ``call`` with an error: an :class:`RPCError` as it is, anything else as -32000."""
        if not self._take(call):
            return
        answer = failure_answer(call, exc, mask_errors=self.mask_errors)
        if isinstance(answer, RPCError):
            self._answer_error(call.id, answer, call.jsonrpc)
        else:
            if call.protocol_version is not None and self._mcp is not None:
                answer = self._mcp.stamp(answer)
            self._send_json({"jsonrpc": "2.0", "id": call.id, "result": answer})
        if self._held:
            self._process()

    def _take(self, call: ToolCall) -> bool:
        if self._calls.get(call.id) is not call:
            if self._state is ConnectionState.CLOSED or self._state is ConnectionState.CLOSING:
                # The peer went away while the call ran: the answer has nowhere to go.
                return False
            raise LocalProtocolError(
                f"call {call.id!r} is not pending: answered twice, or not ours"
            )
        del self._calls[call.id]
        if call.progress is not None:
            call.progress.close()
        if self._cancelled is not None and call.id in self._cancelled:
            # The client cancelled it: MCP sends no answer for a cancelled request.
            self._cancelled.discard(call.id)
            return False
        return self._state is ConnectionState.OPEN

    # Server push

    def notify(self, method: str, params: Any = None) -> bool:
        """Push a notification to the client; ``False`` if the connection is no longer open."""
        if self._state is ConnectionState.CONNECTING:
            raise LocalProtocolError("cannot notify before the handshake is accepted")
        if self._state is not ConnectionState.OPEN:
            return False
        message: dict[str, Any] = {"jsonrpc": "2.0"} if self._mcp is not None else {}
        message["method"] = method
        if params is not None:
            message["params"] = params
        self._send_json(message)
        return True

    @property
    def pending_output(self) -> int:
        """Bytes waiting in ``data_to_send()``: what a slow reader has let pile up."""
        return self._output.size

    @property
    def compressed(self) -> bool:
        """Whether permessage-deflate was negotiated: frames must then be encoded per connection."""
        return self._deflate is not None and self._deflate._accepted_offer

    def send_frame(self, frame: bytes) -> bool:
        """Queue a frame encoded beforehand (see :func:`~securemcp.protocol.encode_notification`).

        Encode once, send to many: a broadcast builds the frame once for every
        connection. Returns ``False`` when the connection is not open. Refused
        (``LocalProtocolError``) on a :attr:`compressed` connection, whose frames
        must be compressed: use :meth:`notify` there.
        """
        if self._state is ConnectionState.CONNECTING:
            raise LocalProtocolError("cannot send before the handshake is accepted")
        if self.compressed:
            raise LocalProtocolError("send_frame() on a compressed connection: use notify()")
        if self._state is not ConnectionState.OPEN:
            return False
        self._write(frame)
        return True

    # Dispatch

    def _on_message(self, data: bytes) -> None:
        if self._mcp is not None:
            self._mcp.on_text(data)
            return
        try:
            message = loads(data, self.limits.max_json_depth)
        except RPCError as exc:
            self._parse_failed(data, exc, False)
            return
        first, self._seen_message = not self._seen_message, True
        if (
            first
            and isinstance(message, dict)
            and message.get("jsonrpc") == "2.0"
            and (message.get("method") == "initialize" or has_envelope(message.get("params")))
        ):
            # An MCP client that did not offer the "mcp" subprotocol: it opens
            # with initialize, or a 2026-07-28 request, which the seed dialect
            # does not have.
            self._mcp = MCPSession(self)
            self._mcp.on_message(message)
            return
        seed.on_message(self, message)

    def _parse_failed(self, data: bytes, exc: RPCError, jsonrpc: bool) -> None:
        """Answer a message that did not parse: -32700, or close 1007 if it is not even UTF-8."""
        if is_utf8(data):
            self._answer_error(None, exc, jsonrpc)
        else:
            self._invalid_utf8()

    def _answer_error(self, request_id: RequestId | None, exc: RPCError, jsonrpc: bool) -> None:
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            error["data"] = exc.data
        answer: dict[str, Any] = {"jsonrpc": "2.0"} if jsonrpc else {}
        answer["id"] = request_id
        answer["error"] = error
        try:
            self._send_json(answer)
        except pydantic_core.PydanticSerializationError:
            # A tool put something unserialisable in its error's data.
            error.pop("data", None)
            self._send_json(answer)

    def _visible_tools(self) -> list[Tool]:
        return visible_tools(self.app.tools.values(), self.principal)

    def _internal_error(self, what: str, exc: BaseException) -> InternalError:
        correlation = secrets.token_hex(6)
        logger.error("%s [%s]: %s", what, correlation, exc)
        return InternalError("Internal error", data={"correlation_id": correlation})

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
        """Authorise, validate and register a tool call; raise an RPCError to refuse it.

        Scopes are checked before validation, so that a caller without them learns
        nothing about the tool's parameters.
        """
        authorize_call(self.principal, tool)
        if request_id in self._calls:
            raise InvalidRequest(
                f"Invalid Request: id {request_id!r} is already in use by a call in flight"
            )
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
        self._calls[request_id] = call
        self._events.append(call)
        return call
