"""Who a connection acts for: :class:`Principal`, and the tokens that stand for one.

An :class:`Authenticator` turns a presented token into a :class:`Principal`,
or raises :class:`AuthenticationError` (HTTP 401). :class:`StaticTokenAuthenticator`
maps fixed tokens or API keys to principals; JWTs are :mod:`._jwt`'s. All of it
is pure: ``now`` (POSIX seconds) is passed in, never read from a clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

from .errors import SecureMCPError

__all__ = [
    "B64TOKEN",
    "AuthenticationError",
    "Authenticator",
    "Principal",
    "StaticTokenAuthenticator",
]

# RFC 6750's b64token: what a Bearer credential may contain. A token meant to
# travel in the subprotocol list must also be an HTTP token (no "/" or "="), so
# base64url without padding (JWTs, ``secrets.token_urlsafe()``) works in both.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _scope_set(scopes: Iterable[str], what: str) -> frozenset[str]:
    # A bare string is an iterable of one-letter "scopes": almost surely a mistake.
    if isinstance(scopes, str):
        raise TypeError(f"{what} must be a collection of scope names, not a string")
    result = frozenset(scopes)
    if not all(isinstance(scope, str) for scope in result):
        raise TypeError(f"{what} must contain only strings")
    return result


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection acts for, as established at the handshake.

    Immutable and safe to share between connections; ``claims`` is a read-only
    view (the verified JWT payload, or empty).
    """

    subject: str
    """A stable, non-secret identifier: a user id, or ``key-<fingerprint>`` for an API key."""
    scopes: AbstractSet[str] = frozenset()
    """What the principal may do; a tool's required scopes must all be here.

    Any set of strings may be given (``{"admin"}``); it is kept as a frozenset."""
    expires_at: float | None = None
    """POSIX seconds from which the credentials no longer count (``None``: never)."""
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), hash=False, compare=True
    )
    """Extra verified facts about the principal, read-only."""

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError("Principal.subject must be a non-empty string")
        # Accept any collection but store exactly what the annotations promise.
        object.__setattr__(self, "scopes", _scope_set(self.scopes, "Principal.scopes"))
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Whether every scope in ``required`` is granted (a single string is one scope)."""
        wanted = frozenset((required,)) if isinstance(required, str) else frozenset(required)
        return wanted <= self.scopes

    def is_expired(self, now: float) -> bool:
        """Whether the credentials no longer count at ``now`` (POSIX seconds)."""
        # Written to fail closed: a NaN `now` counts as expired.
        return self.expires_at is not None and not now < self.expires_at


class AuthenticationError(SecureMCPError):
    """Missing or bad credentials: refuse the upgrade with HTTP 401.

    ``reason`` is short and never contains the token, so it is safe to log and
    to send in the 401 body. ``error`` is the RFC 6750 error code for the
    ``WWW-Authenticate`` challenge: ``"invalid_token"`` (bad, expired, unknown),
    ``"invalid_request"`` (malformed: two tokens, a wrong scheme), or ``None``
    when no credentials were presented at all.
    """

    status_code: ClassVar[int] = 401

    def __init__(self, reason: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error

    def www_authenticate(self, realm: str = "securemcp") -> str:
        """The value of the ``WWW-Authenticate`` header for the 401 answer."""
        escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
        challenge = f'Bearer realm="{escaped}"'
        return challenge if self.error is None else f'{challenge}, error="{self.error}"'


@runtime_checkable
class Authenticator(Protocol):
    """Turns a presented token into a :class:`Principal`.

    Implementations are pure: ``now`` (POSIX seconds) is the only notion of
    time, and they must not block (the server calls them while handling the
    handshake). Any failure raises :class:`AuthenticationError`.
    """

    def authenticate(self, token: str, *, now: float) -> Principal:
        """Return the principal ``token`` stands for at ``now``, or raise AuthenticationError."""
        ...


def _digest(token: str) -> bytes:
    # surrogatepass: a str from anywhere hashes without raising.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class StaticTokenAuthenticator:
    """Fixed bearer tokens or API keys, each mapped to a principal.

    ``tokens`` maps each token either to a :class:`Principal` or to a
    collection of scopes; a collection makes a principal whose subject is the
    non-secret fingerprint ``key-<first 8 hex digits of the token's SHA-256>``.

    Only SHA-256 digests are kept. A presented token's digest is compared with
    every stored digest by :func:`hmac.compare_digest`, with no early exit, so
    the time taken reveals neither which token matched nor whether one did.
    The cost is one comparison per configured token, per handshake.
    """

    def __init__(self, tokens: Mapping[str, Principal | Iterable[str]]) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for token, value in tokens.items():
            if not isinstance(token, str) or not B64TOKEN.fullmatch(token):
                # An empty or oddly shaped token could never arrive in a Bearer
                # header, and "" would make a missing token a valid one.
                raise ValueError(
                    "each token must be a non-empty string of letters, digits and -._~+/ "
                    "(RFC 6750 b64token)"
                )
            digest = _digest(token)
            if isinstance(value, Principal):
                principal = value
            else:
                scopes = _scope_set(value, "the scopes of a token")
                principal = Principal(f"key-{digest.hex()[:8]}", scopes)
            entries.append((digest, principal))
        self._entries = tuple(entries)

    def authenticate(self, token: str, *, now: float) -> Principal:
        """The principal of ``token``; AuthenticationError if unknown or expired."""
        presented = _digest(token)
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        if found is None:
            raise AuthenticationError("unknown token")
        if found.is_expired(now):
            raise AuthenticationError("expired token")
        return found
