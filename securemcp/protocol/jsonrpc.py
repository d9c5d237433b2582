"""JSON text in and out, with the limits a hostile peer makes necessary."""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn, TypeAlias, TypeGuard

import pydantic_core

from ..errors import ParseError

__all__ = ["RequestId", "dumps", "dumps_bytes", "is_request_id", "is_utf8", "loads"]

RequestId: TypeAlias = str | int
"""A JSON-RPC request id as SecureMCP accepts it: a string or an integer."""


def _depth_exceeds(value: Any, max_depth: int, budget: float = math.inf) -> bool | None:
    """Whether ``value`` nests deeper than ``max_depth``; ``None`` if ``budget`` containers
    were not enough to tell."""
    # Iterative, so that measuring a hostile document cannot exhaust the stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        budget -= 1
        if budget < 0:
            return None
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


_SMALL = 4096
"""Texts up to this size are checked for depth by counting brackets first."""

_WALK_BUDGET = 256
"""Containers a large text's depth check walks before it counts brackets instead."""


def _too_deep(text: bytes | str, value: Any, max_depth: int) -> bool:
    # A document with fewer brackets than the limit cannot be deeper than it;
    # counting is done in C and saves the walk for every ordinary message. A
    # large message is usually a large string in a few containers, where the
    # walk is cheaper than scanning every byte twice: walk a little first.
    if len(text) > _SMALL:
        verdict = _depth_exceeds(value, max_depth, _WALK_BUDGET)
        if verdict is not None:
            return verdict
    return _brackets(text) > max_depth and bool(_depth_exceeds(value, max_depth))


def loads(text: bytes | str, max_depth: int) -> Any:
    """Parse one JSON text; anything but strict JSON within ``max_depth`` raises ParseError.

    ``NaN`` and ``Infinity`` are refused, and so are lone surrogate escapes.
    Bytes are read as UTF-8 and refused unless they are: a text parsed from
    bytes was valid UTF-8 (see :func:`is_utf8` to tell the two failures apart).
    """
    try:
        value = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise ParseError(f"Parse error: {exc}") from None
    if isinstance(value, (dict, list)) and _too_deep(text, value, max_depth):
        raise ParseError(f"Parse error: JSON nested deeper than {max_depth} levels")
    return value


def _brackets(text: bytes | str) -> int:
    if isinstance(text, bytes):
        return text.count(b"{") + text.count(b"[")
    return text.count("{") + text.count("[")


def is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (a text frame that is not must close with 1007)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def dumps(value: Any) -> str:
    """Serialise ``value`` (plain data, pydantic models, dataclasses, dates …) as compact JSON.

    Raises ``pydantic_core.PydanticSerializationError`` for values JSON cannot hold,
    ``NaN`` and the infinities included.
    """
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    """:func:`dumps`, as the UTF-8 bytes that go on the wire (no text round trip)."""
    data = pydantic_core.to_json(value)
    # pydantic_core writes non-finite floats as the bare words NaN/Infinity, which
    # are not JSON: the peer would refuse the whole message. Only a hit pays for a
    # re-parse that tells those words inside strings apart (the stdlib parser,
    # because jiter stops at a lower nesting depth than pydantic_core writes).
    # Looking for one byte first is ~50x faster than the substring search on
    # large payloads (256 KiB: 5 us against 250 us, as long as to_json itself).
    if (b"N" in data and b"NaN" in data) or (b"I" in data and b"Infinity" in data):
        json.loads(data, parse_constant=_refuse_constant)
    return data


def _refuse_constant(word: str) -> NoReturn:
    raise pydantic_core.PydanticSerializationError(f"{word} cannot be represented in JSON")


def is_request_id(value: Any) -> TypeGuard[RequestId]:
    """Whether ``value`` may serve as a request id (``bool`` is not an integer here)."""
    return type(value) is str or type(value) is int
