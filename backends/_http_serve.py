"""MCP Streamable HTTP on the WebSocket port: the plain HTTP requests of one connection.

A connection whose first request is no WebSocket upgrade becomes a keep-alive
sequence of plain HTTP requests (:mod:`securemcp.protocol.http`); its
:class:`~backends._driver.ConnectionDriver` hands each one to an
:class:`HTTPEndpoint`, which answers it like this:

- ``POST <mcp_path>`` with one JSON-RPC message, served without any session:
  a 2026-07-28 request (``_meta`` envelope) through the stateless rules
  (:func:`~securemcp.protocol.mcp_stateless.serve_request`, by way of a fresh
  :class:`~securemcp.protocol.mcp.MCPSession`), a legacy ``initialize`` answered
  statelessly, and legacy ``tools/list``/``tools/call`` under the
  ``MCP-Protocol-Version`` header (no session id is ever issued, so any worker
  can answer any request). A result is ``application/json``; a tool call is
  answered as JSON, or as an SSE stream once it reports progress (the progress
  notifications, then the result). A notification gets 202, malformed JSON
  the JSON-RPC parse error with 400.
- ``GET``/``DELETE <mcp_path>``: 405 (no server-initiated stream, no sessions).
- Any other path: what it got before (the ``http_handler`` page or 404, 400
  without a handler), then the connection closes.

Security is the WebSocket's: every request passes the transport's
:class:`~securemcp.SecurityPolicy` handshake rules (Origin: 403; the bearer
token in ``Authorization``: 401 with ``WWW-Authenticate``), tools keep their
scopes, calls their rate limit (-31029), and the connection holds its
``max_connections_per_*`` slots (``_http_caps.py``: 429 with ``Retry-After``).
Then the media types (``_http_media.py``): 415 for a body not declared
``application/json``, 406 for an ``Accept`` admitting neither answer form.

Timing: ``handshake_timeout`` bounds the wait for each complete request (head
and body) from the connection's start or the previous answer, so a slow head
and an idle keep-alive connection are both closed by it.

One request at a time per connection (HTTP/1.1 answers in order): at most one
tool call in flight here; a client closing the connection cancels it.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import pydantic_core

from securemcp.auth import Principal
from securemcp.errors import (
    Cancelled,
    InternalError,
    InvalidRequest,
    RateLimited,
    RPCError,
)
from securemcp.protocol import HandshakeRequest, HTTPRequest, HTTPRequestReceived, ToolCall
from securemcp.protocol.calls import failure_answer
from securemcp.protocol.jsonrpc import dumps_bytes, loads
from securemcp.protocol.mcp import PROTOCOL_VERSIONS, MCPSession
from securemcp.protocol.mcp_stateless import has_envelope
from securemcp.security import HandshakeRefused

from ._calls import progress_sink, run_inline
from ._http_caps import hold_slots
from ._http_media import Form, check_media
from ._http_view import (
    HEADER_MISMATCH,
    RequestSession,
    error_body,
    header_mismatch,
    refusal_answer,
)
from ._http_view import TEXT as _TEXT
from ._http_view import RequestView as _RequestView
from ._security import Deferred, security_logger
from ._settings import answer_http

if TYPE_CHECKING:
    from securemcp.protocol import HTTPServerConnection, ServerConnection

    from ._driver import ConnectionDriver

__all__ = ["HTTPEndpoint"]

logger = logging.getLogger("securemcp")

DEFAULT_LEGACY_VERSION = "2025-03-26"
"""The revision assumed for a legacy request without ``MCP-Protocol-Version`` (the spec's rule)."""

_JSON = [("content-type", "application/json")]


class HTTPEndpoint:
    """Answer the plain HTTP requests of one connection (see the module's docstring)."""

    __slots__ = (
        "_cancel",
        "_form",
        "_http",
        "_principal",
        "_session",
        "_streaming",
        "call",
        "driver",
    )

    def __init__(self, driver: ConnectionDriver) -> None:
        self.driver = driver
        # Made when the connection's first request came, which made this endpoint.
        http = driver.conn.http
        assert http is not None
        self._http: HTTPServerConnection = http
        self.call: ToolCall | None = None
        """The tool call running for the request being answered, if any."""
        self._cancel: Callable[[], object] | None = None
        self._session: MCPSession | None = None
        self._principal: Principal | None = None
        self._streaming = False
        # How the request's Accept lets it be answered (see check_media).
        self._form: Form = "any"

    # Requests

    def on_request(self, request: HTTPRequestReceived) -> None:
        """Answer ``request`` now, or start the tool call that will."""
        driver = self.driver
        driver._arm(math.inf, lazy=True)  # the request is complete: no deadline while answering
        settings = driver.settings
        path = request.path.partition("?")[0]
        if settings.mcp_path is None or path != settings.mcp_path:
            self._page(request)
            return
        if request.method != "POST":
            self._respond(405, b"Method Not Allowed\n", [("allow", "POST"), _TEXT])
            return
        if driver.server.draining or driver._refuse:
            self.refuse(503, "service unavailable")
            return
        admitted, principal = self._admit(request)
        if not admitted or (settings.guard.capped and not hold_slots(self, request, principal)):
            return
        form = check_media(request)
        if isinstance(form, tuple):
            self._respond(form[0], form[1], [_TEXT])
            return
        self._form = form
        self._principal = principal
        try:
            message = loads(request.body, driver.conn.limits.max_json_depth)
        except RPCError as exc:
            self._respond(400, error_body(None, exc), _JSON)
            return
        if not isinstance(message, dict):
            reason = (
                "batch requests are not supported"
                if isinstance(message, list)
                else "expected a JSON object"
            )
            self._respond(
                400, error_body(None, InvalidRequest(f"Invalid Request: {reason}")), _JSON
            )
            return
        if "id" not in message or (
            "method" not in message and ("result" in message or "error" in message)
        ):
            self._respond(202)  # a notification or a response: nothing to answer
            return
        broker = settings.broker
        request_session = None if broker is None else RequestSession(broker, driver.server.loop)
        view = _RequestView(settings.app, driver.conn.limits, principal, request_session)
        session = MCPSession(cast("ServerConnection", view))
        enveloped = has_envelope(message.get("params"))
        mismatch = header_mismatch(request, message) if enveloped else None
        if mismatch is not None:
            refusal = RPCError(f"Header mismatch: {mismatch}", code=HEADER_MISMATCH)
            self._respond(400, error_body(message.get("id"), refusal), _JSON)
            return
        if message.get("method") != "initialize" and not enveloped:
            version = request.header("mcp-protocol-version") or DEFAULT_LEGACY_VERSION
            if version not in PROTOCOL_VERSIONS:
                body = f"Bad Request: unsupported MCP-Protocol-Version {version[:40]!r}\n"
                self._respond(400, body.encode(), [_TEXT])
                return
            # Stateless: a legacy request stands for an initialized session.
            session.protocol_version = version
            session.initialized = True
        session.on_message(message)
        if view.call is not None:
            self._session = session
            self._start(view.call, principal)
            return
        status = 400 if view.errored and view.error_id is None else 200
        self._json(status, view.sent[0] if view.sent else b"{}")

    def _admit(self, request: HTTPRequestReceived) -> tuple[bool, Principal | None]:
        """Whether the security policy admits ``request``, and its principal (refused: answered)."""
        driver = self.driver
        handshake = HandshakeRequest(
            path=request.path,
            host=request.header("host") or "",
            headers=request.headers,
            subprotocols=(),
            extensions=(),
        )
        try:
            accepted = driver.settings.guard.policy.check_handshake(handshake, now=time.time())
        except HandshakeRefused as refusal:
            security_logger.warning(
                "HTTP request from %s refused: HTTP %d %s",
                driver.peer,
                refusal.status,
                refusal.reason,
            )
            self._respond(refusal.status, *refusal_answer(refusal))
            return False, None
        except Exception as exc:  # noqa: BLE001 - a plug-in's failure refuses the request
            security_logger.error(
                "the authenticator raised %s; refusing the request", type(exc).__name__
            )
            self._respond(500, b"authentication failed\n", [_TEXT])
            return False, None
        return True, accepted.principal

    def _page(self, request: HTTPRequestReceived) -> None:
        """A path other than the MCP endpoint: the answer it had before HTTP serving, then close."""
        settings = self.driver.settings
        if settings.http_handler is None:
            self._respond(400, b"Bad Request: not a WebSocket upgrade\n", [_TEXT])
        elif request.method != "GET":
            self._respond(405, b"Method Not Allowed\n", [("allow", "GET"), _TEXT])
        else:
            page = HTTPRequest(request.method, request.path, request.headers)
            status, headers, body = answer_http(settings, page)
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers = [*headers, _TEXT]
            self._respond(status, body, headers)
        self._http.close()

    def _respond(
        self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
    ) -> None:
        self._http.respond(status, body, headers or [])
        self._answered()

    def _json(self, status: int, body: bytes) -> None:
        """Answer with a JSON-RPC message: JSON, or an SSE event for a client taking only SSE."""
        if status != 200 or self._form != "sse":
            self._respond(status, body, _JSON)
            return
        http = self._http
        http.start_stream(200)
        http.send_event(body, event="message")
        http.end_stream()
        self._answered()

    def refuse(self, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Refuse the request with ``status`` and end the connection (``Connection: close``)."""
        body, pairs = refusal_answer(HandshakeRefused(status, reason, tuple(headers)))
        self._http.respond_last(status, body, pairs)
        self._answered()

    def _answered(self) -> None:
        """The answer is complete: the next request must come within the handshake bound."""
        driver = self.driver
        self._session = None
        self._principal = None
        self._streaming = False
        self._form = "any"
        timeout = driver.settings.handshake_timeout
        if timeout is not None and not self._http.closed:
            driver._arm(driver.adapter.now() + timeout, lazy=True)

    # Tool calls

    def _start(self, call: ToolCall, principal: Principal | None) -> None:
        driver = self.driver
        settings = driver.settings
        if driver.server.draining:
            self.call = call
            self.fail(call, Cancelled("Server shutting down"))
            return
        refusal = settings.guard.check_call(
            principal, driver, call.tool.name, driver.peer, now=time.monotonic()
        )
        self.call = call
        if isinstance(refusal, RateLimited):
            self.fail(call, refusal)
            return
        if call.progress is not None and call.progress.token is not None:
            call.progress.bind(progress_sink(self, call, driver.server.loop, driver.adapter.wake))
        if refusal is None and call.tool.runs_inline:
            error = run_inline(self, call)
            if error is not None:
                self.fail(call, error)
            return
        gate = None
        if refusal is Deferred.RATE:

            async def gate(call: ToolCall) -> RateLimited | None:
                return await settings.guard.acheck_call(
                    principal, driver, call.tool.name, driver.peer
                )

        cancel = driver.adapter.spawn(call, gate)
        if self.call is call:
            self._cancel = cancel

    def call_done(self, call: ToolCall, result: Any = None, error: Exception | None = None) -> None:
        """A spawned call ended (see ``ConnectionDriver.call_done``)."""
        if self.call is not call:
            return  # cancelled: the client went away
        if error is not None:
            if not isinstance(error, RPCError) and not self.driver.conn.mask_errors:
                logger.error("tool %r raised", call.tool.name, exc_info=error)
            self.fail(call, error)
        else:
            self.complete(call, result)
        self.driver.server.call_finished()
        self.driver._handle_events()

    def complete(self, call: ToolCall, result: Any) -> None:
        """Answer ``call`` with its tool's ``result``."""
        session = self._session
        if self.call is not call or session is None:
            return
        try:
            body = b"".join(
                session.tool_answer(call.id, call.tool, result, version=call.protocol_version)
            )
        except pydantic_core.PydanticSerializationError as exc:
            correlation = secrets.token_hex(6)
            logger.error(
                "tool %r returned a value JSON cannot hold [%s]: %s",
                call.tool.name,
                correlation,
                exc,
            )
            body = error_body(
                call.id, InternalError("Internal error", data={"correlation_id": correlation})
            )
        self._finish(body)

    def fail(self, call: ToolCall, exc: BaseException) -> None:
        """Answer ``call`` with a failure, as the WebSocket does (tool errors as results)."""
        session = self._session
        if self.call is not call or session is None:
            return
        answer = failure_answer(call, exc, mask_errors=self.driver.conn.mask_errors)
        if isinstance(answer, RPCError):
            body = error_body(call.id, answer)
        else:
            if call.protocol_version is not None:
                answer = session.stamp(answer)
            body = dumps_bytes({"jsonrpc": "2.0", "id": call.id, "result": answer})
        self._finish(body)

    def _finish(self, body: bytes) -> None:
        call, self.call, self._cancel = self.call, None, None
        if call is not None and call.progress is not None:
            call.progress.close()
        http = self._http
        if http.closed:
            return
        if self._streaming:
            http.send_event(body, event="message")
            http.end_stream()
            self._answered()
        elif self._form != "sse":
            http.respond(200, body, _JSON)
            self._answered()
        else:
            self._json(200, body)

    def report_progress(
        self,
        call: ToolCall,
        progress: float,
        total: float | None = None,
        message: str | None = None,
    ) -> bool:
        """Send a progress notification for ``call`` on its SSE answer (started by the first)."""
        reporter, session, http = call.progress, self._session, self._http
        if (
            reporter is None
            or reporter.token is None
            or session is None
            or self.call is not call
            or http.closed
            or self._form == "json"  # the client takes no SSE stream: the result alone
        ):
            return False
        if reporter.last is not None and not progress > reporter.last:
            raise ValueError(f"progress must increase: {progress!r} after {reporter.last!r}")
        if http.pending_output >= self.driver.conn.limits.max_pending_output:
            return False
        reporter.last = progress
        view = cast("_RequestView", session._conn)
        view.sent.clear()
        session.send_progress(
            reporter.token, progress, total, message, version=call.protocol_version
        )
        if not self._streaming:
            http.start_stream(200)
            self._streaming = True
        for note in view.sent:
            http.send_event(note, event="message")
        view.sent.clear()
        return True

    # The connection's end

    def aborted(self) -> None:
        """The client went away before the answer was complete: cancel the call."""
        call, cancel = self.call, self._cancel
        self.call, self._cancel = None, None
        if call is None:
            return
        if call.progress is not None:
            call.progress.close()
        if cancel is not None:
            cancel()
        self.driver.server.call_finished()

    def go_away(self) -> None:
        """The server is stopping: a running call is answered -32800, then the connection closes.

        Between requests the connection just closes, which HTTP/1.1 allows a
        server to do to an idle keep-alive connection.
        """
        call, cancel = self.call, self._cancel
        http = self._http
        if call is not None:
            http.last_answer()
            self.fail(call, Cancelled("Server shutting down"))  # answered, with the call done
            if cancel is not None:
                cancel()
            self.driver.server.call_finished()
        http.close()
