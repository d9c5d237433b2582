"""MCP progress for the client: which call asked for which token, and its updates.

A call made with ``on_progress`` sends a ``progressToken``; the server's
``notifications/progress`` for that token go to that call's own task, where the
callback runs before the call returns. Reports for no known call stay ordinary
notifications.
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import Any

import anyio

from ._client_io import EXPIRED, ClientIO, Waiter
from .mcp_client import ProgressCallback, ProgressUpdate, parse_progress

__all__ = ["ProgressCall", "ProgressRoutes"]

_MAX_QUEUED_PROGRESS = 64


class ProgressCall:
    """The waiter of a call that follows its progress: it also wakes the caller per update."""

    __slots__ = ("_answer", "_done", "_updates", "_wake")

    def __init__(self) -> None:
        self._answer: Any = None
        self._done = False
        # A slow callback: the older update is the one worth losing.
        self._updates: deque[ProgressUpdate] = deque(maxlen=_MAX_QUEUED_PROGRESS)
        self._wake: Waiter | None = None

    def done(self) -> bool:
        """Whether the answer is in."""
        return self._done

    def result(self) -> Any:
        """The answer (only once :meth:`done`)."""
        return self._answer

    def set_result(self, value: Any, /) -> None:
        """The answer arrived (or the connection ended)."""
        self._answer, self._done = value, True
        self._poke()

    def progress(self, update: ProgressUpdate) -> None:
        """A progress report for this call; ignored once the answer is in."""
        if not self._done:
            self._updates.append(update)
            self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def follow(self, io: ClientIO, on_progress: ProgressCallback, deadline: float) -> Any:
        """Hand the updates to ``on_progress`` in this task; return the answer, or
        :data:`EXPIRED` when ``deadline`` comes first."""
        # The callbacks run within the call's time too.
        with anyio.move_on_at(deadline):
            while True:
                while self._updates:
                    outcome = on_progress(self._updates.popleft())
                    if inspect.isawaitable(outcome):
                        await outcome
                if self._done:
                    return self._answer
                self._wake = io.waiter()
                await io.wait(self._wake)
        return EXPIRED


class ProgressRoutes:
    """The calls following their progress on one connection, by token."""

    def __init__(self) -> None:
        self._calls: dict[str, ProgressCall] = {}
        self._last_token = 0

    def with_token(self, params: Any) -> tuple[str, Any]:
        """A new token, and ``params`` carrying it in ``_meta``."""
        self._last_token += 1
        token = f"progress-{self._last_token}"
        return token, {**params, "_meta": {"progressToken": token}}

    def track(self, token: str) -> ProgressCall:
        """The waiter that receives ``token``'s updates until :meth:`forget`."""
        call = self._calls[token] = ProgressCall()
        return call

    def forget(self, token: str) -> None:
        """Stop routing ``token`` (its call is over)."""
        self._calls.pop(token, None)

    def route(self, params: Any) -> bool:
        """Hand a progress report to the call that asked for it; ``False`` if none did."""
        parsed = parse_progress(params)
        if parsed is None:
            return False
        token, update = parsed
        call = self._calls.get(token) if isinstance(token, str) else None
        if call is None:
            return False
        call.progress(update)
        return True
