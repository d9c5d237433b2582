"""The security policy of a server, and the handshake check every backend runs.

Pure like the protocol core: the time is passed in, nothing is read from a
socket or a clock. A backend calls :meth:`SecurityPolicy.check_handshake` on
each :class:`~securemcp.protocol.HandshakeRequest` and then either
``accept(principal=...)`` or ``reject(refusal.status, ...)``; on each plain
HTTP request it calls :meth:`SecurityPolicy.check_request`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .auth import AuthenticationError, Authenticator, Principal, authenticate_handshake
from .errors import SecureMCPError
from .origin import OriginPolicy
from .protocol.events import HandshakeRequest
from .proxies import TrustedProxies
from .ratelimit import AsyncConnectionCounter, AsyncRateLimiter, RateLimiter

__all__ = ["HandshakeAccepted", "HandshakeRefused", "SecurityPolicy"]


class HandshakeRefused(SecureMCPError):
    """The handshake must be refused with this HTTP ``status`` (and ``headers``)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class HandshakeAccepted:
    """A handshake that passed the policy."""

    principal: Principal | None
    """Who connects; ``None`` when anonymous."""
    subprotocols: tuple[str, ...]
    """The subprotocols the client offered, credentials removed: choose from these only."""


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """Everything a server enforces beyond the protocol limits.

    The default policy authenticates nobody and lets every origin in: right for
    a local development server, not for one a browser can reach.
    """

    authenticator: Authenticator | None = None
    """Checks bearer tokens; ``None`` makes every connection anonymous."""
    allow_anonymous: bool = False
    """With an authenticator: whether a connection without a token is let in (its
    principal is ``None`` and it can call only tools that need no scope)."""
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    """Which browser origins may connect (403 otherwise)."""
    rate_limiter: RateLimiter | AsyncRateLimiter | None = None
    """Tool calls per principal (or per anonymous connection); -31029 past it.

    An :class:`~securemcp.ratelimit.AsyncRateLimiter` (one shared through
    Redis) makes every call run in a task that awaits its decision first."""
    max_connections_per_principal: int | AsyncConnectionCounter | None = None
    """Open connections one principal may hold (HTTP 429 past it).

    A number caps them per server process; an
    :class:`~securemcp.ratelimit.AsyncConnectionCounter` (one shared through
    Redis: ``RedisConnectionCounter(url, max_per_key)``) caps them across every
    process that shares it, each handshake then awaiting its decision."""
    max_connections_per_address: int | AsyncConnectionCounter | None = None
    """Open connections one client IP address may hold (HTTP 429 past it); a
    number, or a shared counter as for ``max_connections_per_principal``."""
    mask_errors: bool = False
    """Hide the text of tool exceptions from callers (they get a correlation id
    that also appears in the server log)."""
    realm: str = "securemcp"
    """The realm named in ``WWW-Authenticate`` on a 401."""
    trusted_proxies: tuple[str, ...] = ()
    """The reverse proxies whose ``X-Forwarded-For`` is believed: IP addresses or
    CIDR networks, such as ``("127.0.0.1", "10.0.0.0/8")`` (``ValueError`` here
    for an entry that is neither). A connection from one of them is the client's
    that the header names (:func:`securemcp.proxies.client_address`) for the
    per-address connection cap, the rate limit of anonymous HTTP requests and the
    security log. List only proxies you run: any other peer could name any
    address. Empty (the default): the header is never read."""
    proxies: TrustedProxies = field(init=False, repr=False, compare=False)
    """``trusted_proxies``, parsed (when the policy was made)."""

    def __post_init__(self) -> None:
        proxies = TrustedProxies(self.trusted_proxies)
        # Frozen: the parsed form is set once, here, and the entries kept as a tuple.
        object.__setattr__(self, "trusted_proxies", tuple(self.trusted_proxies))
        object.__setattr__(self, "proxies", proxies)

    def check_handshake(self, request: HandshakeRequest, *, now: float) -> HandshakeAccepted:
        """Apply the Origin and authentication rules; raise :class:`HandshakeRefused` to refuse.

        ``now`` is the POSIX time, for token expiry.
        """
        principal, subprotocols = self._admit(request.headers, request.subprotocols, now)
        return HandshakeAccepted(principal, subprotocols)

    def check_request(
        self, path: str, headers: tuple[tuple[str, str], ...], *, now: float
    ) -> Principal | None:
        """:meth:`check_handshake` for a plain HTTP request (``path``, lower-case ``headers``):
        its principal, or :class:`HandshakeRefused`.

        A subclass that overrides :meth:`check_handshake` has it asked here too,
        so that HTTP requests pass its rules as upgrades do; the stock policy
        checks the headers directly, without a handshake object per request.
        """
        if type(self).check_handshake is not SecurityPolicy.check_handshake:
            host = next((value for name, value in headers if name == "host"), "")
            request = HandshakeRequest(path, host, headers, subprotocols=(), extensions=())
            return self.check_handshake(request, now=now).principal
        return self._admit(headers, (), now)[0]

    def _admit(
        self, headers: tuple[tuple[str, str], ...], subprotocols: tuple[str, ...], now: float
    ) -> tuple[Principal | None, tuple[str, ...]]:
        if not self.origins.check_headers(headers):
            raise HandshakeRefused(403, "origin not allowed")
        try:
            return authenticate_handshake(
                self.authenticator,
                headers,
                subprotocols,
                now=now,
                required=not self.allow_anonymous,
            )
        except AuthenticationError as exc:
            raise HandshakeRefused(
                401, exc.reason, (("www-authenticate", exc.www_authenticate(self.realm)),)
            ) from None
