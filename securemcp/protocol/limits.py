"""The limits every connection enforces, in one place with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]

# jiter (pydantic_core's JSON parser) refuses nesting past 200 on its own.
_PARSER_DEPTH_CEILING = 200

# h11, under wsproto, refuses an incomplete head past 16 KiB with its own
# generic error; keeping our limit at or below it means ours always speaks first.
_HANDSHAKE_SIZE_CEILING = 16 * 1024

_POSITIVE_INTEGERS = (
    "max_message_size",
    "max_fragments",
    "max_json_depth",
    "max_in_flight",
    "max_pending_output",
    "max_handshake_size",
    "max_header_count",
    "max_http_body",
    "max_http_requests",
    "max_http_pipelined",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits for one connection. The defaults are safe for a public server.

    Every limit is counted on data as it arrives, before it is buffered.
    """

    max_message_size: int = 1024 * 1024
    """Largest message in bytes, summed over its fragments (after inflation when
    permessage-deflate is on); over it: close 1009."""
    max_fragments: int = 1024
    """Most frames one message may be split into; a message needing more: close 1009.
    Bounds the work and bookkeeping a stream of tiny (even empty) fragments costs."""
    max_json_depth: int = 64
    """Deepest nesting of JSON arrays and objects; deeper messages get -32700."""
    max_in_flight: int = 64
    """Tool calls running at once on one connection; at the limit the core stops
    reading (``wants_read`` is false) until a call completes."""
    max_pending_output: int = 4 * 1024 * 1024
    """Bytes waiting in ``data_to_send`` past which the core stops reading input,
    so that a peer that does not read its answers cannot grow the buffer. The
    broadcast honours it too: a connection whose backlog a notification would
    push past it is closed with 1013 (Try Again Later) instead."""
    max_handshake_size: int = 16 * 1024
    """Bytes of the opening handshake's HTTP head (request line, headers, blank
    line), at most 16 KiB; a server answers a larger head with HTTP 431 before
    buffering it."""
    max_header_count: int = 64
    """Header lines in the opening handshake's head; more: HTTP 431."""
    max_http_body: int = 1024 * 1024
    """Bytes of a plain HTTP request's body, counted as they arrive (Content-Length
    or chunked); over it: HTTP 413 and the connection closes, the rest unread."""
    max_http_requests: int = 1000
    """Plain HTTP requests one keep-alive connection serves; the answer to the
    last says ``Connection: close``."""
    max_http_pipelined: int = 64 * 1024
    """Bytes of pipelined HTTP requests held unparsed while an earlier request
    is answered; at the limit the core stops reading (``wants_read`` is false)."""
    permessage_deflate: bool = False
    """Negotiate permessage-deflate (RFC 7692) when the peer offers it. Off by
    default: compression costs memory per connection and CPU per message. When
    on, inflation stops the moment a message passes ``max_message_size`` (close
    1009), so a decompression bomb never inflates past the limit."""

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTEGERS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if self.max_json_depth > _PARSER_DEPTH_CEILING:
            raise ValueError(f"Limits.max_json_depth cannot exceed {_PARSER_DEPTH_CEILING}")
        if self.max_handshake_size > _HANDSHAKE_SIZE_CEILING:
            raise ValueError(f"Limits.max_handshake_size cannot exceed {_HANDSHAKE_SIZE_CEILING}")
        if not isinstance(self.permessage_deflate, bool):
            raise ValueError(
                f"Limits.permessage_deflate must be a bool, not {self.permessage_deflate!r}"
            )
