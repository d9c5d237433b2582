"""The bytes of HTTP/1.1 answers: status lines, header fields, chunks.

h11 parses every request (:mod:`securemcp.protocol.http`); answers are written
here instead of through h11's writer. An answer's framing is fully known to
the caller (a ``Content-Length``, or a chunked SSE stream), so h11's writer
only added per-answer work: three events built and run through its state
machine, and every header re-validated by regular expression on each answer.
That was about a third of the time a keep-alive ``POST /mcp`` spent in the
core. What h11 guarded against is still refused: a header name that is no
token and a value holding CR, LF or NUL raise :class:`LocalProtocolError`
(the application's bug, never the peer's), so no answer can be split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from http import HTTPStatus

from ..errors import LocalProtocolError

__all__ = [
    "CLOSE",
    "TEXT_PLAIN",
    "CONTINUE",
    "FRAMING",
    "LAST_CHUNK",
    "chunk",
    "closing_answer",
    "field",
    "head",
    "reason",
    "status_line",
]

FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
"""Header names the connection sets itself; an answer's own are dropped."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE = re.compile(r"[\x00\r\n]")

TEXT_PLAIN = "text/plain; charset=utf-8"
"""The content type of the connection's own answers (refusals)."""

CLOSE = b"connection: close\r\n"
"""The framing line of a connection's last answer."""
LAST_CHUNK = b"0\r\n\r\n"
"""The empty chunk that ends a chunked body (no trailers)."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
"""The interim answer to ``Expect: 100-continue``, sent before the body is read."""


def reason(status: int) -> str:
    """The standard reason phrase of ``status`` (empty for a code without one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


@lru_cache(maxsize=64)
def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>`` and its CRLF."""
    if not 100 <= status <= 999:
        raise LocalProtocolError(f"{status} is no HTTP status code")
    return f"HTTP/1.1 {status} {reason(status)}\r\n".encode()


@lru_cache(maxsize=512)
def field(name: str, value: str) -> bytes:
    """One header line (name lower-cased, value trimmed), checked so that it cannot split the head.

    Cached: an endpoint answers with the same few fields again and again.
    """
    if _TOKEN.fullmatch(name) is None:
        raise LocalProtocolError(f"invalid header name {name!r}")
    value = value.strip(" \t")
    if _UNSAFE.search(value) is not None:
        raise LocalProtocolError(f"invalid header value for {name!r}: CR, LF or NUL")
    try:
        return f"{name.lower()}: {value}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"header {name!r} is not latin-1") from None


def head(
    status: int,
    headers: Iterable[tuple[str, str]],
    content_type: str | None,
    framing: bytes,
) -> bytes:
    """A whole answer head: ``headers`` (framing ones dropped), the content type, ``framing``.

    ``framing`` is the connection's own lines (``content-length``,
    ``transfer-encoding``, ``connection``), already encoded.
    """
    parts = [status_line(status)]
    typed = content_type is None
    for name, value in headers:
        lowered = name.lower()
        if lowered in FRAMING:
            continue
        typed = typed or lowered == "content-type"
        parts.append(field(name, value))
    if not typed:
        assert content_type is not None
        parts.append(field("content-type", content_type))
    parts.append(framing)
    parts.append(b"\r\n")
    return b"".join(parts)


def closing_answer(
    status: int, body: bytes, headers: Iterable[tuple[str, str]] = (), *, to_head: bool = False
) -> bytes:
    """A connection's last answer: ``body`` (plain text unless ``headers`` say otherwise),
    its length and ``Connection: close``; the body left out when ``to_head`` a HEAD request."""
    framing = b"content-length: %d\r\n%b" % (len(body), CLOSE)
    return head(status, headers, TEXT_PLAIN, framing) + (b"" if to_head else body)


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (never the last, empty one)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
