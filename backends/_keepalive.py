"""Keepalive decisions for one connection: when to ping, when a pong is overdue.

Pure state, advanced by whoever keeps the time: on a server, its ticker, one
task for every connection instead of a timer per connection, since an idle
connection should cost memory and nothing else (the ticker runs a few times per
interval, so a ping goes out, and an overdue pong is noticed, within a quarter
of the period); on a client, a task of its one connection that sleeps until
:meth:`Keepalive.next_tick`.
"""

from __future__ import annotations

import math
import os
from typing import Literal

__all__ = ["Keepalive", "check_seconds"]


def check_seconds(name: str, value: float | None) -> None:
    """Refuse a timeout or interval (``name``) that is not a positive number of seconds or None."""
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")


class Keepalive:
    """The keepalive of one connection, with ``interval`` and ``timeout`` in seconds."""

    __slots__ = ("_deadline", "_next_ping", "interval", "payload", "timeout")

    def __init__(self, interval: float | None, timeout: float | None) -> None:
        self.interval = interval
        self.timeout = timeout
        self._next_ping = math.inf
        self._deadline: float | None = None
        self.payload = b""
        """The latest ping's payload: the pong that answers it carries the same."""

    def start(self, now: float) -> None:
        """The connection opened at ``now``: the first ping is due an interval later."""
        if self.interval is not None:
            self._next_ping = now + self.interval

    def next_tick(self) -> float:
        """When :meth:`tick` next has something to say: a ping due, or a pong overdue."""
        if self._deadline is not None and self.timeout is not None:
            return self._deadline
        return self._next_ping

    def pong(self, payload: bytes) -> None:
        """The peer answered; only the answer to our latest ping counts."""
        if payload == self.payload:
            self._deadline = None

    def tick(self, now: float, *, reading: bool) -> Literal["ping", "timeout"] | None:
        """``"ping"`` (send one with :attr:`payload`), ``"timeout"``, or ``None``.

        While the connection is not ``reading``, its pong may be sitting unread:
        the peer gets a full deadline from when reading resumes.
        """
        if self._deadline is not None and self.timeout is not None:
            if not reading:
                self._deadline = now + self.timeout
            elif now >= self._deadline:
                return "timeout"
            return None
        if self.interval is not None and now >= self._next_ping:
            self.payload = os.urandom(4)
            self._next_ping = now + self.interval
            if self.timeout is not None:
                self._deadline = now + self.timeout
            return "ping"
        return None
