"""A client connection's calls: sent, awaited under a deadline, made a result.

:class:`SessionCalls` is the base of
:class:`~securemcp.backends._client_session.ClientSession`, which keeps the
state it works on and wakes a call's waiter when its answer arrives. Here a
request goes out (waiting first while the socket pushes back), its wait ends at
its deadline (one timer for the connection, armed for the earliest), follows
the call's MCP progress when asked to, and its answer becomes the result or the
exception it means. A call given up on (a timeout, a cancellation) is
forgotten, and over MCP the server is told to stop it.
"""

from __future__ import annotations

from typing import Any

import anyio

from securemcp.errors import ConnectionClosed, LocalProtocolError, RequestTimeout, error_for_code
from securemcp.protocol import (
    ClientConnection,
    ConnectionState,
    ErrorReceived,
    RequestId,
    ResponseReceived,
)
from securemcp.protocol import ConnectionClosed as ClosedEvent
from securemcp.protocol.mcp_stateless import SERVER_DISCOVER

from ._client_io import EXPIRED, INFINITY, ClientIO, Waiter
from ._client_progress import ProgressCall, ProgressRoutes
from .mcp_client import ProgressCallback, check_result_type, with_meta

__all__ = ["SessionCalls"]

_OPEN = ConnectionState.OPEN
# Timers may fire a little early (uvloop counts in milliseconds).
_SLACK = 0.001

_NEVER_CANCELLED = frozenset({"initialize", SERVER_DISCOVER})


class SessionCalls:
    """The call methods of a client session, over the state the session keeps."""

    conn: ClientConnection
    io: ClientIO | None
    connected: bool
    close_code: int | None
    close_reason: str
    meta: dict[str, Any] | None
    _started: bool
    _waiting: dict[RequestId, Waiter]
    _progress: ProgressRoutes
    _deadlines: dict[Waiter, float]
    _armed: float

    @property
    def speaks_mcp(self) -> bool:
        """Whether this connection speaks MCP."""
        raise NotImplementedError

    async def call(
        self,
        method: str,
        params: Any,
        limit: float | None,
        *,
        tool_call: bool,
        on_progress: ProgressCallback | None = None,
    ) -> Any:
        """Send a request; return its result or raise what its answer (or its absence) means."""
        conn = self.conn
        if conn.state is not _OPEN:
            self._refuse()
        io = self.io
        assert io is not None
        deadline = INFINITY if limit is None else io.time() + limit
        if io.write_blocked:
            # Backpressure: the socket does not take our bytes as fast as we make them.
            with anyio.move_on_at(deadline):
                while io.write_blocked:
                    await io.writable()
            if io.write_blocked:
                raise RequestTimeout(f"could not send {method!r} within {limit} s")
            if conn.state is not _OPEN:
                self._refuse()
        waiter: Waiter
        meta = self.meta
        if on_progress is None:
            request_id = conn.send_request(
                method, params if meta is None else with_meta(params, meta)
            )
            waiter = self._waiting[request_id] = io.waiter()
            if deadline != INFINITY:
                self._expire_at(waiter, deadline)
        else:
            token, params = self._progress.with_token(params)
            request_id = conn.send_request(
                method, params if meta is None else with_meta(params, meta)
            )
            waiter = self._waiting[request_id] = self._progress.track(token)
        try:
            io.write()
            if on_progress is None:
                answer = await io.wait(waiter)
            else:
                assert isinstance(waiter, ProgressCall)
                answer = await waiter.follow(io, on_progress, deadline)
        finally:
            if on_progress is not None:
                self._progress.forget(token)
            elif deadline != INFINITY:
                self._deadlines.pop(waiter, None)
            # Still waiting (a timeout or a cancellation): a late answer must be dropped.
            if self._waiting.pop(request_id, None) is not None:
                self._abandon(request_id, method)
        if answer is EXPIRED:
            raise RequestTimeout(f"no answer to {method!r} within {limit} s")
        result = self._outcome(answer, tool_call)
        if meta is not None:
            check_result_type(result)
        return result

    def _expire_at(self, waiter: Waiter, deadline: float) -> None:
        # One timer for the connection, armed for the earliest deadline: a
        # timer per call would cost more than the rest of the call's own work.
        self._deadlines[waiter] = deadline
        if deadline < self._armed:
            self._armed = deadline
            assert self.io is not None
            self.io.arm(deadline)

    def expire(self, now: float) -> None:
        """The armed deadline has come: end the waits that are due, arm the next one."""
        self._armed = INFINITY
        due = now + _SLACK
        following = INFINITY
        for waiter, deadline in list(self._deadlines.items()):
            if deadline <= due:
                del self._deadlines[waiter]
                if not waiter.done():
                    waiter.set_result(EXPIRED)
            elif deadline < following:
                following = deadline
        if following != INFINITY:
            self._armed = following
            assert self.io is not None
            self.io.arm(following)

    @staticmethod
    def _outcome(answer: Any, tool_call: bool) -> Any:
        if type(answer) is ResponseReceived:
            return answer.result
        if type(answer) is ErrorReceived:
            raise error_for_code(answer.code, answer.message, answer.data, tool_call=tool_call)
        assert type(answer) is ClosedEvent
        raise ConnectionClosed(answer.code, answer.reason)

    def _refuse(self) -> None:
        """Why no call can be made now."""
        if not self._started:
            raise LocalProtocolError(
                "the client is not connected: use 'async with WebSocketClient(...)'"
            )
        if not self.connected:
            raise LocalProtocolError("the client is not connected")
        raise ConnectionClosed(self.close_code, self.close_reason or "the connection is closing")

    def _abandon(self, request_id: RequestId, method: str) -> None:
        conn = self.conn
        conn.forget(request_id)
        if self.speaks_mcp and method not in _NEVER_CANCELLED and conn.state is _OPEN:
            # MCP: tell the server to stop (it must not cancel initialize, nor
            # the server/discover probe, which a legacy server may not know).
            conn.notify(
                "notifications/cancelled",
                {"requestId": request_id, "reason": "the caller stopped waiting"},
            )
            assert self.io is not None
            self.io.write()
