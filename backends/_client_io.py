"""The interface between the client's policy and the event loop it runs on.

:class:`~securemcp.backends._client_session.ClientSession` holds everything a
client decides (which call an answer belongs to, what an error answer raises,
where a notification goes, when the connection is over). It never touches a
socket or an event loop itself: it asks a :class:`ClientIO` to wait, to write
and to start a task. There are two: an :class:`asyncio.Protocol` on asyncio
(and uvloop), a reader task on trio.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import sniffio

if TYPE_CHECKING:
    from ._client_session import ClientSession

__all__ = ["EXPIRED", "INFINITY", "ClientIO", "Signal", "Waiter", "io_class"]

INFINITY = float("inf")
EXPIRED: Any = object()
"""What a waiter's result is when its deadline passed first."""


class Waiter(Protocol):
    """What one task waits on until another part of the client sets its result.

    :class:`asyncio.Future` is one as it is (the cheapest waiter asyncio has);
    the trio adapter has its own.
    """

    def done(self) -> bool:
        """Whether the result is set."""

    def set_result(self, value: Any, /) -> None:
        """Set the result and wake the task waiting, if any."""

    def result(self) -> Any:
        """The result (only once :meth:`done`)."""


class ClientIO(abc.ABC):
    """One connection's socket on one event loop, as the session drives it."""

    @classmethod
    @abc.abstractmethod
    async def open(cls, session: ClientSession, deadline: float) -> ClientIO | None:
        """Connect TCP (and TLS), then start feeding the socket's bytes to ``session``.

        ``None`` when the deadline passed first. A failed connect raises the
        system's :class:`OSError` (see :func:`~securemcp.backends._client_target.connect_error`).
        """

    @abc.abstractmethod
    def time(self) -> float:
        """The event loop's clock, which deadlines are measured on."""

    @abc.abstractmethod
    def waiter(self) -> Waiter:
        """A new waiter for :meth:`wait`."""

    @abc.abstractmethod
    async def wait(self, waiter: Waiter) -> Any:
        """Wait until ``waiter`` is done; return its result.

        Cancellation from the caller's cancel scopes passes through.
        """

    @abc.abstractmethod
    def arm(self, deadline: float) -> None:
        """Call the session's :meth:`~ClientSession.expire` once the loop's clock reaches
        ``deadline``, instead of any time armed before (one timer per connection)."""

    @property
    @abc.abstractmethod
    def write_blocked(self) -> bool:
        """Whether a caller must wait (:meth:`writable`) before it adds a request."""

    @abc.abstractmethod
    async def writable(self) -> None:
        """Wait until :attr:`write_blocked` may have cleared."""

    @abc.abstractmethod
    def write(self) -> None:
        """Send what the core has to send, without waiting for the peer.

        The socket or a task of the adapter keeps what the peer does not take
        yet; callers see that as :attr:`write_blocked`.
        """

    @abc.abstractmethod
    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` beside the caller until :meth:`shutdown` (the notification handler)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection at once (a server that stopped answering pings): the
        socket is closed without waiting for anything, and the session sees it lost."""

    @abc.abstractmethod
    async def shutdown(self, deadline: float) -> None:
        """End the connection: the core is closed (as a lost connection if need be),
        the socket is closed, spawned tasks are over. Never raises, not even when
        the caller is being cancelled; done by ``deadline`` at the latest."""


def io_class() -> type[ClientIO]:
    """The adapter for the async library this task runs under."""
    if sniffio.current_async_library() == "trio":
        from ._client_trio import TrioIO

        return TrioIO
    from ._client_asyncio import AsyncioIO

    return AsyncioIO


class Signal:
    """Wakes every task waiting on it, each time it fires."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[Waiter] = []

    async def wait(self, io: ClientIO) -> None:
        """Wait for the next :meth:`fire`."""
        waiter = io.waiter()
        self._waiters.append(waiter)
        try:
            await io.wait(waiter)
        finally:
            # Not there once fired; still there after a cancellation.
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def fire(self) -> None:
        """Wake every task waiting."""
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                # A cancelled asyncio waiter is done already.
                if not waiter.done():
                    waiter.set_result(None)
