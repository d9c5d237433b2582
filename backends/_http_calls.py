"""The answering side of an HTTP endpoint: its answers, and the one tool call a request runs.

:class:`CallAnswers` is the base of :class:`~backends._http_serve.HTTPEndpoint`,
which reads the requests. It writes a request's answer (JSON, or an SSE event
for a client taking only SSE; a refusal ends the connection), runs the tool
call a request started (inline when its coroutine cannot suspend, else as a
task, behind the rate limit), answers it (its result, a tool error, progress
notifications on an SSE stream), and cancels it when the client goes away or
the server stops.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import pydantic_core

from securemcp.auth import Principal
from securemcp.errors import Cancelled, InternalError, RateLimited, RPCError
from securemcp.protocol import ToolCall
from securemcp.protocol.calls import failure_answer
from securemcp.protocol.jsonrpc import dumps_bytes
from securemcp.security import HandshakeRefused

from ._calls import progress_sink, run_inline
from ._http_media import Form
from ._http_view import RequestView, error_body, refusal_answer
from ._security import Deferred

if TYPE_CHECKING:
    from securemcp.protocol import HTTPServerConnection
    from securemcp.protocol.mcp import MCPSession

    from ._driver import ConnectionDriver

__all__ = ["JSON", "CallAnswers"]

logger = logging.getLogger("securemcp")

JSON = [("content-type", "application/json")]


class CallAnswers:
    """A connection's answers and its tool call; :class:`HTTPEndpoint` reads the requests."""

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

    # Answers

    def _respond(
        self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
    ) -> None:
        self._http.respond(status, body, headers or [])
        self._answered()

    def _json(self, status: int, body: bytes) -> None:
        """Answer with a JSON-RPC message: JSON, or an SSE event for a client taking only SSE."""
        if status != 200 or self._form != "sse":
            self._respond(status, body, JSON)
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
        # This request's client: behind a trusted proxy, the next request's may differ.
        address, peer = driver.address, driver.peer
        refusal = settings.guard.check_call(
            principal, driver, call.tool.name, peer, now=time.monotonic(), address=address
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
                    principal, driver, call.tool.name, peer, address=address
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
            http.respond(200, body, JSON)
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
        view = cast("RequestView", session._conn)
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
