"""The opening handshake's HTTP head, measured before wsproto (h11) buffers any of it.

h11 refuses an oversized head only past its own 16 KiB, with a generic error,
and it counts no headers. :class:`HeadCounter` counts the head's bytes and
lines as they arrive, against ``Limits.max_handshake_size`` and
``max_header_count``, and tells where the head ends, so that what follows it
(frames a client pipelined, the body of a server's refusal) goes where it
belongs. A server that answers plain HTTP itself keeps the head's bytes too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from wsproto.events import RejectConnection
from wsproto.utilities import RemoteProtocolError

from .limits import Limits

__all__ = ["HandshakeTooLarge", "HeadCounter", "header_pairs"]

# The end of an HTTP head as h11 finds it: a line feed, an optional carriage
# return, a line feed.
_END_OF_HEAD = re.compile(b"\n\r?\n")


class HandshakeTooLarge(RemoteProtocolError):
    """The peer's handshake head passed ``Limits.max_handshake_size`` or ``max_header_count``.

    A server answers it with HTTP 431 (Request Header Fields Too Large).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, event_hint=RejectConnection(status_code=431))


class HeadCounter:
    """Counts one HTTP head as it arrives; lives only until the handshake is over."""

    __slots__ = ("_lines", "_size", "_tail", "chunks", "complete", "limits", "start")

    def __init__(self, limits: Limits, *, keep: bool) -> None:
        self.limits = limits
        self.complete = False
        """Whether the blank line that ends the head has arrived."""
        self.start = b""
        """The head's first five bytes: enough to tell a ``HEAD`` request."""
        self.chunks: list[bytes] | None = [] if keep else None
        """The head's bytes, when kept (bounded by ``max_handshake_size``)."""
        self._size = 0
        self._lines = 0
        self._tail = b""

    def count(self, data: bytes) -> int:
        """Count the head's part of ``data``; how many bytes of ``data`` the head takes.

        Raises :class:`HandshakeTooLarge` as soon as a limit is passed. Lines
        are counted as h11 splits them (on line feeds).
        """
        if len(self.start) < 5:
            self.start += data[: 5 - len(self.start)]
        window = self._tail + data
        end = _END_OF_HEAD.search(window)
        taken = len(data) if end is None else end.end() - len(self._tail)
        head = data[:taken]
        self._size += taken
        self._lines += head.count(b"\n")
        if end is not None:
            self.complete = True
            # Neither the request (status) line nor the blank line is a header.
            headers = self._lines - 2
        else:
            self._tail = window[-2:]
            headers = self._lines - 1
        limits = self.limits
        if self._size > limits.max_handshake_size:
            raise HandshakeTooLarge(f"handshake exceeds {limits.max_handshake_size} bytes")
        if headers > limits.max_header_count:
            raise HandshakeTooLarge(f"handshake has more than {limits.max_header_count} headers")
        if self.chunks is not None:
            self.chunks.append(head)
        return taken


def header_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """HTTP headers as wsproto gives them, as (lower-case name, value) text pairs."""
    return tuple((name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in pairs)
