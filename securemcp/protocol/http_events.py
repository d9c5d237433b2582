"""What the plain HTTP layer reports, and what a request's head says of its body.

:class:`HTTPRequestReceived` and :class:`HTTPAborted` are the events of
:class:`~securemcp.protocol.http.HTTPServerConnection`; :func:`framing` reads
the framing headers h11 has already checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import Event

__all__ = ["HTTPAborted", "HTTPRequestReceived", "framing"]


@dataclass(frozen=True, slots=True)
class HTTPRequestReceived(Event):
    """A complete HTTP request, body included; answer it before the next comes."""

    method: str
    path: str
    """The request target, query string included."""
    headers: tuple[tuple[str, str], ...]
    """Every request header as (lower-case name, value), in order."""
    body: bytes
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class HTTPAborted(Event):
    """The peer went away before the answer to its request was complete: cancel the work."""

    reason: str


def framing(headers: tuple[tuple[str, str], ...], version: bytes) -> tuple[int, bool, bool]:
    """A request's body length (0 if chunked), whether chunked, and whether keep-alive holds.

    h11 has already checked the framing headers (one valid ``Content-Length``,
    only the ``chunked`` coding); keep-alive follows its rule too: not after
    ``Connection: close``, nor for an HTTP/1.0 peer.

    Raises :class:`ValueError` for a request with both ``Content-Length`` and
    ``Transfer-Encoding``, which h11 would read by its chunks: RFC 9112 6.3
    calls that a likely smuggling attempt, to be refused or answered and then
    closed, and it is refused (400) rather than served.
    """
    length: int | None = None
    chunked, keep_alive = False, version >= b"1.1"
    for name, value in headers:
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = True
        elif name == "connection" and keep_alive:
            keep_alive = "close" not in (token.strip().lower() for token in value.split(","))
    if chunked:
        if length is not None:
            raise ValueError("Content-Length and Transfer-Encoding together")
        return 0, True, keep_alive
    return length or 0, False, keep_alive
