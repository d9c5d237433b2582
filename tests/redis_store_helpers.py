"""What the RedisMessageStore tests share: the short operation bound and its slack."""

from __future__ import annotations

TIMEOUT = 1.0
"""The stores' operation bound here: short, so outage tests stay quick."""
SLACK = 1.0
"""How much past ``TIMEOUT`` an Unavailable may come (a loaded 2-core machine)."""
