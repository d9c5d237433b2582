"""Progress reports from a running tool to its caller.

A tool that declares a parameter annotated ``Progress`` receives one for each
call; like :class:`~securemcp.Context`, that parameter is not part of the
tool's input schema. Reports reach the caller as MCP ``notifications/progress``
when the call asked for them (``_meta.progressToken``); otherwise reporting is
a harmless no-op, so a tool never needs to check.

>>> from securemcp import Progress, SecureMCP
>>> app = SecureMCP("demo")
>>> @app.tool()
... def crunch(items: list[int], progress: Progress) -> int:
...     total = 0
...     for done, item in enumerate(items, 1):
...         total += item
...         progress.report(done, len(items))
...     return total
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Progress", "ProgressSink"]

ProgressSink = Callable[[float, "float | None", "str | None"], bool]
"""What a driver installs with :meth:`Progress.bind`: send one report, say whether it went out."""


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return value


class Progress:
    """Reports how far one tool call has got.

    :meth:`report` is safe to call from the worker thread a sync tool runs in.
    Each report's ``progress`` must be greater than the previous one (MCP
    requires it; a smaller or equal value raises ``ValueError``). Once the call
    is answered or cancelled, reports are dropped silently.
    """

    __slots__ = ("_closed", "_sink", "last", "token")

    def __init__(self, token: str | int | None = None) -> None:
        self.token = token
        """The caller's progress token; ``None`` when the caller did not ask for progress."""
        self.last: float | None = None
        """The last progress value sent (kept by the core, which enforces the increase)."""
        self._sink: ProgressSink | None = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        """Whether reports can still reach the caller."""
        return self.token is not None and self._sink is not None and not self._closed

    def report(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> bool:
        """Tell the caller that ``progress`` (of ``total``, if known) is done.

        Returns whether the report was sent: ``False`` when the caller did not
        ask for progress or the call is over.
        """
        _number("progress", progress)
        if total is not None:
            _number("total", total)
        if message is not None and not isinstance(message, str):
            raise TypeError(f"message must be a string, not {type(message).__name__}")
        sink = self._sink
        if sink is None or self._closed or self.token is None:
            return False
        return sink(progress, total, message)

    # For drivers: the backend binds the delivery, the core closes it.

    def bind(self, sink: ProgressSink) -> None:
        """Install the function that delivers reports (a backend's job, once per call)."""
        self._sink = sink

    def close(self) -> None:
        """Stop delivering reports: the call is answered, cancelled or its connection gone."""
        self._closed = True

    def __repr__(self) -> str:
        return f"Progress(token={self.token!r}, enabled={self.enabled})"
