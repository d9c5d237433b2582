"""What the client works out before it opens a socket: target, headers, token, TLS.

Pure checks and conversions, kept apart from the client's I/O so that each can
be read (and refused) on its own: every error names the problem without ever
quoting a token, since exceptions end up in logs.
"""

from __future__ import annotations

import re
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from securemcp.auth import SUBPROTOCOL_TOKEN_PREFIX

__all__ = [
    "Target",
    "connect_error",
    "header_pairs",
    "parse_http_url",
    "parse_url",
    "system_error",
    "tls_context",
    "with_token",
]

# Headers the handshake itself sets; a second copy from the caller would make
# the upgrade ambiguous, so they are refused up front.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

# RFC 6750's b64token, and the narrower form a subprotocol entry allows (an
# RFC 7230 token: no "/" or "=").
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SUBPROTOCOL_TOKEN = re.compile(r"[A-Za-z0-9\-._~+]+")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a ``ws://`` or ``wss://`` URL points, as the handshake needs it."""

    secure: bool
    host: str
    port: int
    host_header: str
    resource: str


def parse_url(url: str) -> Target:
    """Check a ``ws://`` / ``wss://`` URL; ``ValueError`` says what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}: use ws:// or wss://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "credentials in the URL are not supported (they end up in logs): "
            "pass headers={'Authorization': 'Bearer ...'} instead"
        )
    if parts.fragment:
        raise ValueError(f"a WebSocket URL cannot have a fragment: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    try:
        explicit_port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in {url!r}") from exc
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    port = default_port if explicit_port is None else explicit_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return Target(secure, host, port, host_header, resource)


def parse_http_url(url: str) -> Target:
    """Check an ``http://`` / ``https://`` URL; ``ValueError`` says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(f"unsupported URL in {url!r}: use http:// or https://")
    # The WebSocket URL's checks (credentials, fragment, host, port) apply as they are.
    return parse_url(("wss" if scheme.lower() == "https" else "ws") + "://" + rest)


def header_pairs(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    """The caller's extra headers as pairs, refusing invalid ones and the handshake's own."""
    pairs = tuple(headers.items() if isinstance(headers, Mapping) else headers)
    for name, value in pairs:
        if not name or not set(name) <= _TOKEN_CHARS:
            raise ValueError(f"invalid header name {name!r}")
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"invalid characters in the value of header {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the WebSocket handshake itself")
    return pairs


def with_token(
    token: str,
    in_subprotocol: bool,
    headers: tuple[tuple[str, str], ...],
    subprotocols: tuple[str, ...],
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """Add ``token`` to the handshake: the headers and subprotocols to send.

    The messages never quote the token: exceptions end up in logs.
    """
    if not isinstance(token, str):
        raise TypeError("token must be a string")
    # Two credentials make the server refuse the handshake (ambiguous): say it here.
    if any(name.lower() == "authorization" for name, _ in headers) or any(
        entry.startswith(SUBPROTOCOL_TOKEN_PREFIX) for entry in subprotocols
    ):
        raise ValueError("token given twice: in headers/subprotocols and as token=")
    if in_subprotocol:
        # A subprotocol entry must be an HTTP token: base64url without padding.
        if not _SUBPROTOCOL_TOKEN.fullmatch(token):
            raise ValueError(
                "a token sent as a subprotocol may contain only letters, digits and -._~+"
            )
        return headers, (*subprotocols, SUBPROTOCOL_TOKEN_PREFIX + token)
    if not _BEARER_TOKEN.fullmatch(token):
        raise ValueError("a bearer token may contain only letters, digits and -._~+/ (then =)")
    return (*headers, ("Authorization", f"Bearer {token}")), subprotocols


def tls_context(
    target: Target, ssl: ssl_module.SSLContext | bool | None
) -> ssl_module.SSLContext | None:
    """The TLS context for ``target`` (``None`` for ``ws://``), refusing contradictions."""
    if not target.secure:
        if ssl not in (None, False):
            raise ValueError("ssl is only valid with a wss:// URL")
        return None
    if ssl is False:
        raise ValueError("a wss:// URL needs TLS: ssl=False is contradictory")
    if isinstance(ssl, ssl_module.SSLContext):
        return ssl
    return ssl_module.create_default_context()


def connect_error(exc: OSError, url: str) -> OSError:
    """The system's own error behind anyio's "All connection attempts failed"."""
    # anyio reports "All connection attempts failed" with the real errors as its
    # cause (a group when several addresses were tried); users expect the real
    # ConnectionRefusedError, so surface the first one, without any group.
    cause = exc.__cause__
    if isinstance(cause, OSError):
        first = cause
    elif isinstance(cause, BaseExceptionGroup):
        first = next((e for e in cause.exceptions if isinstance(e, OSError)), exc)
    else:
        return exc
    return system_error(first, url)


def system_error(first: OSError, url: str) -> OSError:
    """``first`` (the first address's failure) as the error a connect to ``url`` raises."""
    if first.errno is None:
        return first
    return type(first)(first.errno, f"cannot connect to {url}: {first.strerror}")
