"""How long a reconnecting client waits between attempts: :class:`Backoff`.

Pure arithmetic, no clock and no I/O, so that the delays can be checked
without waiting for them (the random source is injectable).
"""

from __future__ import annotations

import math
import random as random_module
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, bounded: the reconnecting client's schedule.

    Before attempt ``n`` (0 for the first after a drop) the client waits
    ``ceiling = min(maximum, initial * factor ** n)`` seconds, of which the
    fraction ``jitter`` is random: ``ceiling * (1 - jitter) + random() *
    ceiling * jitter``. The default ``jitter=0.5`` is "equal jitter" (half
    fixed, half random), so that clients dropped together by one server restart
    do not all come back in the same instant, yet none retries at once.

    The client gives up (closes for good) after ``max_attempts`` failed
    attempts in a row, or when the next attempt would start more than
    ``give_up_after`` seconds after the drop; ``None`` (the default for both)
    keeps trying, at most every ``maximum`` seconds.

    :param initial: the first delay's ceiling, in seconds.
    :param maximum: the ceiling no delay exceeds.
    :param factor: how much each failed attempt multiplies the ceiling by.
    :param jitter: the random fraction of each delay, from 0 (none) to 1 (all).
    :param max_attempts: failed attempts in a row before giving up.
    :param give_up_after: seconds after the drop past which no attempt starts.
    :param random: a source of floats in [0, 1), e.g. ``random.Random(7).random`` in tests.
    """

    initial: float = 0.5
    maximum: float = 15.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    give_up_after: float | None = None
    random: Callable[[], float] = field(default=random_module.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ValueError(f"initial must be > 0, not {self.initial!r}")
        if not self.maximum >= self.initial:
            raise ValueError(f"maximum must be >= initial, not {self.maximum!r}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, not {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts!r}")
        if self.give_up_after is not None and not self.give_up_after > 0:
            raise ValueError(f"give_up_after must be > 0, not {self.give_up_after!r}")

    def ceiling(self, attempt: int) -> float:
        """The longest delay before attempt ``attempt`` (0-based)."""
        if attempt <= 0 or self.factor == 1:
            return self.initial
        # Compared in the exponent: factor ** attempt alone overflows a float after
        # a long outage.
        if attempt >= math.log(self.maximum / self.initial, self.factor):
            return self.maximum
        return float(self.initial * self.factor**attempt)

    def delay(self, attempt: int, *, at_least: float = 0.0) -> float:
        """The delay before attempt ``attempt`` (0-based), jitter drawn from :attr:`random`.

        ``at_least`` is what the server asked for (``Retry-After``): the delay
        is no shorter, unless that exceeds :attr:`maximum`, which no delay
        does (a server cannot park its clients for a day).
        """
        ceiling = self.ceiling(attempt)
        drawn = ceiling * (1 - self.jitter) + self.random() * ceiling * self.jitter
        return max(drawn, min(at_least, self.maximum))

    def gives_up(self, failures: int, elapsed: float) -> bool:
        """Whether to stop after ``failures`` failed attempts in a row, when the next
        attempt would start ``elapsed`` seconds after the drop."""
        if self.max_attempts is not None and failures >= self.max_attempts:
            return True
        return self.give_up_after is not None and elapsed >= self.give_up_after
