"""The limits every connection enforces, in one place with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]

# jiter (pydantic_core's JSON parser) refuses nesting past 200 on its own.
_PARSER_DEPTH_CEILING = 200


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits for one connection. The defaults are safe for a public server.

    Every limit is counted on data as it arrives, before it is buffered.
    """

    max_message_size: int = 1024 * 1024
    """Largest message in bytes, summed over its fragments; over it: close 1009."""
    max_json_depth: int = 64
    """Deepest nesting of JSON arrays and objects; deeper messages get -32700."""
    max_in_flight: int = 64
    """Tool calls running at once on one connection; at the limit the core stops
    reading (``wants_read`` is false) until a call completes."""
    max_pending_output: int = 4 * 1024 * 1024
    """Bytes waiting in ``data_to_send`` past which the core stops reading input,
    so that a peer that does not read its answers cannot grow the buffer."""

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_json_depth", "max_in_flight", "max_pending_output"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if self.max_json_depth > _PARSER_DEPTH_CEILING:
            raise ValueError(f"Limits.max_json_depth cannot exceed {_PARSER_DEPTH_CEILING}")
