"""Media types in HTTP headers: what a ``Content-Type`` names, what an ``Accept`` admits.

Pure functions over header values (RFC 9110 8.3 and 12.5.1), for a server
choosing how to answer a request: parameters other than ``q`` are ignored, and
case does not matter.
"""

from __future__ import annotations

__all__ = ["accepts", "media_type"]


def media_type(value: str | None) -> str | None:
    """The ``type/subtype`` a ``Content-Type`` value names, lower-cased (``None``: absent)."""
    if value is None:
        return None
    return value.partition(";")[0].strip().lower() or None


def accepts(accept: str | None, wanted: str) -> bool:
    """Whether an ``Accept`` value admits the media type ``wanted`` (``type/subtype``).

    No ``Accept`` (or an empty one) admits anything. Otherwise the most
    specific range matching ``wanted`` decides (``type/subtype`` over
    ``type/*`` over ``*/*``): admitted unless its ``q`` is 0. A ``q`` that is
    not a number counts as 1: a sloppy client is not refused for it.
    """
    if accept is None or not accept.strip():
        return True
    kind = wanted.partition("/")[0]
    best, quality = 0, 0.0
    for item in accept.split(","):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if media == wanted:
            rank = 3
        elif media == f"{kind}/*":
            rank = 2
        elif media == "*/*":
            rank = 1
        else:
            continue
        if rank > best:
            best, quality = rank, _quality(params)
    return best > 0 and quality > 0


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 1.0
    return 1.0
