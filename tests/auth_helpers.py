"""What the tests of the authentication building blocks share: the clock, an outcome."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from securemcp.auth import AuthenticationError

_T = TypeVar("_T")

NOW = 1_700_000_000.0


def _outcome(fn: Callable[[], _T]) -> _T | AuthenticationError:
    try:
        return fn()
    except AuthenticationError as exc:
        return exc
