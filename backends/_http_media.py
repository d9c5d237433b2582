"""What a Streamable HTTP POST must declare of its media types, and how it may be answered.

The spec has the client send ``Content-Type: application/json`` and an
``Accept`` listing both ``application/json`` and ``text/event-stream``. The
server is strict where it must understand the request and lenient where it
only chooses the answer's form:

- ``Content-Type`` other than ``application/json`` (parameters such as
  ``charset`` aside), or none: 415. The body is read as JSON and nothing else;
  and a browser cannot send ``application/json`` cross-origin without a CORS
  preflight, so a page cannot post to the endpoint behind its users' backs.
  A ``Content-Encoding`` other than ``identity``: 415 too (RFC 9110 15.5.16):
  bodies are never inflated, so a compressed one is refused, not misread.
- ``Accept`` admitting neither type (``q=0`` counts as excluding): 406.
  Admitting only ``application/json``: served, the result as JSON, without a
  progress stream. Admitting only ``text/event-stream`` (as some proxies send):
  served, every 200 answer as an SSE stream. No ``Accept``: either.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from securemcp.protocol import HTTPRequestReceived
from securemcp.protocol.media import accepts, media_type

__all__ = ["Form", "check_media"]

Form = Literal["any", "json", "sse"]
"""How a request may be answered: either way, JSON only, or SSE only."""

_UNSUPPORTED = (415, b"Unsupported Media Type: Content-Type must be application/json\n")
_UNCODED = (415, b"Unsupported Media Type: Content-Encoding must be identity\n")
_NOT_ACCEPTABLE = (
    406,
    b"Not Acceptable: Accept must admit application/json or text/event-stream\n",
)


def check_media(request: HTTPRequestReceived) -> Form | tuple[int, bytes]:
    """How ``request`` may be answered, or the refusal (status, body) its media types earn."""
    if media_type(request.header("content-type")) != "application/json":
        return _UNSUPPORTED
    coding = request.header("content-encoding")
    if coding is not None and coding.strip().lower() not in ("", "identity"):
        return _UNCODED
    # Several Accept lines are one list (RFC 9110 5.3).
    values = [value for name, value in request.headers if name == "accept"]
    accept = ", ".join(values) if values else None
    if accept is None or len(accept) <= _CACHED_UP_TO:
        return _known_form(accept)
    return _form(accept)


_CACHED_UP_TO = 256
"""A client sends the same ``Accept`` with every request: short values are decided once."""


def _form(accept: str | None) -> Form | tuple[int, bytes]:
    json_ok = accepts(accept, "application/json")
    sse_ok = accepts(accept, "text/event-stream")
    if json_ok:
        return "any" if sse_ok else "json"
    return "sse" if sse_ok else _NOT_ACCEPTABLE


_known_form = lru_cache(maxsize=128)(_form)
