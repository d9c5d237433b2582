"""The Origin allowlist: refuse browser pages from other sites before the upgrade.

Browsers send ``Origin`` with every WebSocket handshake and let any page open
a WebSocket to any server; they do not apply the same-origin policy here. Without a
check, a page on ``https://evil.example`` can talk to your server with the
visitor's cookies, or, through DNS rebinding, to a server on their
``127.0.0.1`` (cross-site WebSocket hijacking). Non-browser clients usually
send no ``Origin`` at all.

A refused origin gets HTTP 403 before the upgrade::

    if not policy.check_headers(request.headers):
        conn.reject(403)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["OriginPolicy"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# An RFC 6454 serialized origin: scheme "://" host [":" port], nothing else (no
# path, user info, query, list of origins or surrounding space). Hosts are
# ASCII, as browsers send them (IDNs in punycode); IPv6 literals in brackets.
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://"
    r"(?P<host>[A-Za-z0-9\-._~]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def _normalise(origin: str) -> str | None:
    """The canonical form of ``origin``, or None when it is not a serialized origin."""
    if origin == "null":
        return origin
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    host = match["host"].lower()
    port_text = match["port"]
    if port_text is None:
        return f"{scheme}://{host}"
    port = int(port_text)
    if port > 65535:
        return None
    if port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """Which ``Origin`` header values may open a connection.

    ``allowed=None`` (the default) lets every origin in: right for servers
    used by programs, not browsers, but then any web page a user visits can
    reach the server from their browser — set an allowlist whenever a browser
    may be on the same machine or network as the server.

    Otherwise an origin is allowed only if it equals an allowed one, after
    lower-casing scheme and host and dropping the scheme's default port
    (``https://a.com:443`` is ``https://a.com``). Nothing else: no prefix,
    suffix, substring or wildcard matching, so allowing ``https://a.com``
    allows neither ``https://a.com.evil.net`` nor ``https://evil-a.com`` nor
    ``http://a.com`` nor ``https://sub.a.com``. The opaque origin ``"null"``
    (sandboxed frames, ``file:`` pages) is refused unless listed.

    Requests without ``Origin`` come from non-browser clients; they are allowed
    unless ``allow_missing`` is false.
    """

    def __init__(self, allowed: Iterable[str] | None = None, *, allow_missing: bool = True) -> None:
        self.allow_missing = allow_missing
        self.allowed: frozenset[str] | None = None
        if allowed is not None:
            if isinstance(allowed, str):
                raise TypeError("allowed must be a collection of origins, not a string")
            normalised = set()
            for origin in allowed:
                canonical = _normalise(origin)
                if canonical is None:
                    # A typo here (a path, a "*", a trailing slash) would
                    # silently allow nothing; say so when configuring.
                    raise ValueError(
                        f"not an origin: {origin!r} (expected scheme://host[:port] or 'null')"
                    )
                normalised.add(canonical)
            self.allowed = frozenset(normalised)

    def check(self, origin: str | None) -> bool:
        """Whether a handshake whose ``Origin`` header is ``origin`` (None: absent) may proceed."""
        if origin is None:
            return self.allow_missing
        if self.allowed is None:
            return True
        canonical = _normalise(origin)
        return canonical is not None and canonical in self.allowed

    def check_headers(self, headers: Iterable[tuple[str, str]]) -> bool:
        """:meth:`check` on a handshake's (lower-case name, value) headers.

        With an allowlist, more than one ``Origin`` header is refused: a
        browser sends exactly one, and which one a proxy would honour is
        anyone's guess.
        """
        origins = [value for name, value in headers if name == "origin"]
        if len(origins) > 1:
            return self.allowed is None
        return self.check(origins[0] if origins else None)
