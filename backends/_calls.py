"""Running a tool call that may suspend: the same coroutine for every I/O path.

A driver runs a call in place when its coroutine cannot suspend; any other call
gets a task from its adapter, and this is that task's body. Sync tools run in a
worker thread, bounded by the server's limiter, so that they never block the
event loop. Cancellation (the client's, a close, a shutdown) arrives as the
loop's cancellation and ends the call without an answer from here: whoever
cancelled it has answered it already.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from securemcp.protocol import ToolCall

from ._pubsub import LoopThread

if TYPE_CHECKING:
    from ._driver import ConnectionDriver

__all__ = ["Answerer", "Gate", "guarded", "progress_sink", "run_call", "run_inline"]

logger = logging.getLogger("securemcp")

Gate = Callable[[ToolCall], Awaitable["Exception | None"]]
"""What a call awaits before its tool runs: ``None`` to go on, else the answer to send
instead (the asynchronous rate limiter's -31029)."""


class Answerer(Protocol):
    """What answers calls and carries their progress: a ``ServerConnection``, an HTTP endpoint."""

    def complete(self, call: ToolCall, result: Any) -> None:
        """Answer ``call`` with its tool's ``result``."""

    def report_progress(
        self,
        call: ToolCall,
        progress: float,
        total: float | None = None,
        message: str | None = None,
    ) -> bool:
        """Send a progress report for ``call``; whether it went out."""


async def run_call(
    driver: ConnectionDriver,
    call: ToolCall,
    limiter: anyio.CapacityLimiter,
    gate: Gate | None = None,
) -> None:
    """Run ``call``'s tool (once ``gate`` let it) and hand its result or exception to ``driver``."""
    tool = call.tool
    result: Any = None
    try:
        if gate is not None:
            refusal = await gate(call)
            if refusal is not None:
                driver.call_done(call, error=refusal)
                return
        if tool.is_async:
            result = await tool.fn(**call.arguments)
        else:
            result = await anyio.to_thread.run_sync(
                functools.partial(tool.fn, **call.arguments),
                abandon_on_cancel=True,
                limiter=limiter,
            )
    except Exception as exc:  # noqa: BLE001 - a tool's failure is its caller's answer
        driver.call_done(call, error=exc)
    else:
        driver.call_done(call, result)


async def guarded(work: Callable[[], Coroutine[Any, Any, None]], driver: ConnectionDriver) -> None:
    """``await work()``, logging what it raises: a driver's own task must not end the server."""
    try:
        await work()
    except Exception:
        logger.exception("unexpected error on the connection from %s", driver.peer)


def run_inline(conn: Answerer, call: ToolCall) -> Exception | None:
    """Run a call whose coroutine cannot suspend and answer it; the tool's exception, if any.

    ``Tool.runs_inline`` promises that one step finishes the coroutine, so no
    task and no event loop are needed: a task spawn saved per call.
    """
    coro = call.tool.fn(**call.arguments)
    try:
        coro.send(None)
    except StopIteration as done:
        conn.complete(call, done.value)
        return None
    except Exception as exc:  # noqa: BLE001 - a tool's failure is its caller's answer
        return exc
    # Unreachable for a tool that truly never awaits; refuse rather than run
    # a half-started coroutine outside any event loop.
    coro.close()
    return RuntimeError("tool suspended although it has no await")


def progress_sink(
    conn: Answerer, call: ToolCall, loop: LoopThread, wake: Callable[[], None]
) -> Callable[[float, float | None, str | None], bool]:
    """Deliver ``call``'s progress reports, from the loop or from a tool's worker thread."""

    def deliver(value: float, total: float | None, message: str | None) -> bool:
        sent = conn.report_progress(call, value, total, message)
        if sent:
            wake()
        return sent

    def sink(value: float, total: float | None, message: str | None) -> bool:
        if threading.get_ident() == loop.thread:
            return deliver(value, total, message)
        try:
            return loop.run(deliver, value, total, message)
        except RuntimeError:  # pragma: no cover - needs a loop that ended mid-report
            # The loop is gone: an abandoned sync tool reporting after the end.
            return False

    return sink
