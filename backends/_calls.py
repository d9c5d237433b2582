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
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from securemcp.protocol import ToolCall

if TYPE_CHECKING:
    from ._driver import ConnectionDriver

__all__ = ["run_call"]


async def run_call(
    driver: ConnectionDriver, call: ToolCall, limiter: anyio.CapacityLimiter
) -> None:
    """Run ``call``'s tool and hand its result or exception to ``driver``."""
    tool = call.tool
    result: Any = None
    try:
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
