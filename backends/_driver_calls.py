"""The tool calls of one server connection: started, answered, cancelled.

:class:`DriverCalls` is the base of
:class:`~securemcp.backends._driver.ConnectionDriver`, which keeps the state it
works on. A call the core resolved is refused while the server drains or when
the rate limit says so (an asynchronous limiter decides in the call's own
task), answered right here when its coroutine cannot suspend
(``Tool.runs_inline``: in the same pass as the bytes that asked for it), or
handed to the adapter to run in a task. Each call in a task is kept, with its
canceller, until it is answered or cancelled: by the client (MCP), by the
close, or by the server's shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from securemcp.errors import Cancelled, RateLimited, RPCError
from securemcp.protocol import RequestId, ServerConnection, ToolCall

from ._calls import progress_sink, run_inline
from ._security import Deferred
from ._settings import Adapter, ServerSettings, ServerState

if TYPE_CHECKING:
    from ._http_serve import HTTPEndpoint

__all__ = ["DriverCalls"]

logger = logging.getLogger("securemcp")


class DriverCalls:
    """The tool-call methods of a connection driver, over the state the driver keeps."""

    # Keyed by request id (unique among calls in flight, the core sees to that);
    # the driver sets it up.
    __slots__ = ("_calls",)

    _calls: dict[RequestId, tuple[ToolCall, Callable[[], object]]]
    # What it reads.
    adapter: Adapter
    conn: ServerConnection
    peer: str
    server: ServerState
    settings: ServerSettings
    _http: HTTPEndpoint | None

    def _handle_events(self) -> None:
        raise NotImplementedError

    @property
    def calls_in_flight(self) -> int:
        """Tool calls started and not yet answered."""
        http = self._http
        return len(self._calls) + (0 if http is None or http.call is None else 1)

    def _start_call(self, call: ToolCall) -> None:
        if self.server.draining:
            self.conn.fail(call, Cancelled("Server shutting down"))
            return
        refusal = self.settings.guard.check_call(
            self.conn.principal, self, call.tool.name, self.peer, now=time.monotonic()
        )
        if refusal is not None:
            if refusal is Deferred.RATE:
                self._spawn_rate_checked(call)
            else:
                self.conn.fail(call, refusal)
            return
        if call.progress is not None and call.progress.token is not None:
            call.progress.bind(progress_sink(self.conn, call, self.server.loop, self.adapter.wake))
        if call.tool.runs_inline:
            # No task: the answer leaves with the others of this read in one write.
            error = run_inline(self.conn, call)
            if error is not None:
                self._report_failure(call, error)
            return
        # Registered before spawning: an adapter may run the call at once.
        self._calls[call.id] = (call, _nothing)
        cancel = self.adapter.spawn(call)
        if call.id in self._calls:
            self._calls[call.id] = (call, cancel)

    def _spawn_rate_checked(self, call: ToolCall) -> None:
        # An asynchronous limiter (shared through Redis) decides in the call's
        # own task, never inline: a call of any tool suspends for it.
        if call.progress is not None and call.progress.token is not None:
            call.progress.bind(progress_sink(self.conn, call, self.server.loop, self.adapter.wake))
        self._calls[call.id] = (call, _nothing)
        cancel = self.adapter.spawn(call, self._rate_check)
        if call.id in self._calls:
            self._calls[call.id] = (call, cancel)

    async def _rate_check(self, call: ToolCall) -> RateLimited | None:
        return await self.settings.guard.acheck_call(
            self.conn.principal, self, call.tool.name, self.peer
        )

    def call_done(self, call: ToolCall, result: Any = None, error: Exception | None = None) -> None:
        """A spawned call ended with ``result`` or ``error``: answer it (unless cancelled)."""
        http = self._http
        if http is not None and http.call is call:
            http.call_done(call, result, error)
            return
        entry = self._calls.get(call.id)
        if entry is None or entry[0] is not call:
            # Cancelled: whoever cancelled the call answered it or let the core forget it
            # (a new call may reuse the id of one the client cancelled).
            return
        del self._calls[call.id]
        if error is not None:
            self._report_failure(call, error)
        else:
            self.conn.complete(call, result)
        self.server.call_finished()
        self._handle_events()

    def _cancel_call(self, call: ToolCall) -> None:
        """The client cancelled ``call`` (MCP): stop it; the core sends no answer."""
        entry = self._calls.get(call.id)
        if entry is None or entry[0] is not call:
            return  # Already answered (refused, or finished in this same batch).
        del self._calls[call.id]
        entry[1]()
        # Answering frees the call's slot in the core, which drops the answer itself.
        self.conn.fail(call, Cancelled("Cancelled by the client"))
        self.server.call_finished()

    def _cancel_calls(self, reason: str) -> None:
        calls, self._calls = self._calls, {}
        for call, cancel in calls.values():
            # Answered (-32800) while the connection is open; otherwise the core
            # only forgets the call.
            self.conn.fail(call, Cancelled(reason))
            cancel()
        if calls:
            self.server.call_finished()

    def _report_failure(self, call: ToolCall, error: Exception) -> None:
        if not isinstance(error, RPCError) and not self.conn.mask_errors:
            # When masking, the core logs it once, with the correlation id.
            logger.error("tool %r raised", call.tool.name, exc_info=error)
        self.conn.fail(call, error)


def _nothing() -> None:
    """The canceller of a call whose adapter has not yet said how to cancel it."""
