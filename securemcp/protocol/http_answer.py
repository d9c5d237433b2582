"""The answering side of :class:`~securemcp.protocol.http.HTTPServerConnection`.

A whole answer (:meth:`Answers.respond`), or an SSE stream
(:meth:`~Answers.start_stream`, :meth:`~Answers.send_event`,
:meth:`~Answers.end_stream`), framed here: a ``Content-Length``, or chunks
(none for an HTTP/1.0 peer, whose stream ends with the connection); the
connection's last answer says ``Connection: close``. The bytes of heads and
chunks are :mod:`~securemcp.protocol.http_write`'s; reading requests is the
connection's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING

from ..errors import LocalProtocolError
from . import http_write

if TYPE_CHECKING:
    import h11

    from .limits import Limits
    from .output import Output

__all__ = ["Answers", "Phase"]

_JSON_TYPE = "application/json"
_CHUNKED = b"transfer-encoding: chunked\r\n"


class Phase(Enum):
    """Where a connection is in its request-answer cycle."""

    READING = "reading"  # reading a request's head (or waiting for one), or a chunked body
    BODY = "body"  # reading a body of known length (Content-Length)
    ANSWERING = "answering"  # a request was delivered; its answer has not started
    STREAMING = "streaming"  # an SSE answer is open
    CLOSED = "closed"


class Answers:
    """The answer methods of an HTTP server connection, over the state it keeps."""

    # The state answering shares with reading; the connection sets it up.
    __slots__ = ("_chunked", "_keep_alive", "_output", "_phase", "_request", "limits", "requests")

    _phase: Phase
    _keep_alive: bool
    _chunked: bool
    _request: h11.Request | None
    _output: Output
    limits: Limits
    requests: int

    def _answered(self) -> None:
        raise NotImplementedError

    # Answers

    def last_answer(self) -> None:
        """Make the answer being given the connection's last (``Connection: close``, then close)."""
        self._keep_alive = False

    def respond_last(
        self, status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """:meth:`respond`, as the connection's last answer (``Connection: close``), then close."""
        self._keep_alive = False
        self.respond(status, body, headers)

    def respond(
        self, status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer the request with ``status``, ``headers`` and a whole ``body``.

        ``Content-Length`` is set (framing headers given are dropped);
        ``Content-Type`` defaults to ``application/json`` when there is a body.
        A header that could split the answer raises :class:`LocalProtocolError`.
        """
        self._require(Phase.ANSWERING, "respond")
        if status < 200:
            raise LocalProtocolError(f"respond() needs a final status, not {status}")
        payload = body.encode() if isinstance(body, str) else body
        framing = b""
        if status in (204, 304):  # RFC 9110 8.6: no Content-Length on a 204
            if payload:
                raise LocalProtocolError(f"a {status} answer has no body")
        else:
            framing = b"content-length: %d\r\n" % len(payload)
        if not self._keeps_alive():
            framing += http_write.CLOSE
        self._output.append(
            http_write.head(status, headers, _JSON_TYPE if payload else None, framing)
        )
        if payload and not self._is_head():
            self._output.append(payload)
        self._answered()

    def start_stream(self, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Start an SSE answer (``text/event-stream``, chunked); then :meth:`send_event`."""
        self._require(Phase.ANSWERING, "start_stream")
        if status < 200 or status in (204, 304):
            raise LocalProtocolError(f"a stream needs a final status with a body, not {status}")
        pairs = list(headers)
        names = {name.lower() for name, _ in pairs}
        if "content-type" not in names:
            pairs.append(("content-type", "text/event-stream"))
        if "cache-control" not in names:
            pairs.append(("cache-control", "no-cache"))
        # An HTTP/1.0 peer knows no chunks: the stream then ends with the connection.
        request = self._request
        self._chunked = request is not None and request.http_version != b"1.0"
        framing = _CHUNKED if self._chunked else b""
        if not self._keeps_alive():
            framing += http_write.CLOSE
        self._output.append(http_write.head(status, pairs, None, framing))
        self._phase = Phase.STREAMING

    def send_event(
        self, data: bytes | str, *, event: str | None = None, event_id: str | None = None
    ) -> bool:
        """Send one SSE event (``data: ...`` lines, a blank line); ``False`` if it cannot go out."""
        if self._phase is Phase.CLOSED:
            return False
        self._require(Phase.STREAMING, "send_event")
        text = data.decode() if isinstance(data, bytes) else data
        lines = []
        if event is not None:
            lines.append(f"event: {_one_line(event)}\n")
        if event_id is not None:
            lines.append(f"id: {_one_line(event_id)}\n")
        lines.extend(f"data: {line}\n" for line in text.replace("\r\n", "\n").split("\n"))
        lines.append("\n")
        payload = "".join(lines).encode()
        if self._is_head():
            return True
        self._output.append(http_write.chunk(payload) if self._chunked else payload)
        return True

    def end_stream(self) -> None:
        """End the SSE answer; the connection then serves the next request (or closes)."""
        if self._phase is Phase.CLOSED:
            return
        self._require(Phase.STREAMING, "end_stream")
        if self._chunked and not self._is_head():
            self._output.append(http_write.LAST_CHUNK)
        self._answered()

    def _require(self, phase: Phase, what: str) -> None:
        if self._phase is not phase:
            raise LocalProtocolError(
                f"{what}() is not valid now (the connection is {self._phase.value})"
            )

    def _is_head(self) -> bool:
        return self._request is not None and self._request.method == b"HEAD"

    def _keeps_alive(self) -> bool:
        """Whether another request may follow this answer (else it says ``Connection: close``)."""
        if self.requests >= self.limits.max_http_requests:
            self._keep_alive = False  # the last request this connection serves
        return self._keep_alive


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")
