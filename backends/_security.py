"""A server's :class:`~securemcp.SecurityPolicy` applied to live connections.

The policy itself is pure (:mod:`securemcp.security`); what it cannot know is
what is open right now. :class:`ConnectionGuard` adds that state for one
transport: the connection caps per principal and per client address, acquired
when a handshake is admitted and released when the connection ends.

Security events go to the ``securemcp.security`` logger, at INFO for the
ordinary (a connection admitted) and WARNING for refusals. Nothing logged here
ever holds a token, a request path (a misguided client may have put a token in
its query string) or a message body.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from securemcp.auth import Principal
from securemcp.errors import RateLimited
from securemcp.protocol import HandshakeRequest
from securemcp.ratelimit import AsyncRateLimiter, ConnectionCounter, RateLimiter
from securemcp.security import HandshakeRefused, SecurityPolicy

__all__ = [
    "Admission",
    "ConnectionGuard",
    "Deferred",
    "Refusal",
    "rate_key",
    "security_logger",
]

security_logger = logging.getLogger("securemcp.security")
"""Where refusals, forbidden and rate-limited calls and expiry closes are reported."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A handshake the policy let in, and the connection slots it holds."""

    principal: Principal | None
    """Who connects (``None``: anonymous)."""
    subprotocols: tuple[str, ...]
    """The subprotocols offered, token entries removed: the only ones that may be chosen."""
    principal_key: Hashable | None = None
    """The per-principal slot held, if that cap applies."""
    address_key: Hashable | None = None
    """The per-address slot held, if that cap applies."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A handshake the server turns down, as the HTTP answer to give."""

    status: int
    body: str | None = None
    headers: Sequence[tuple[str, str]] = ()


class Deferred(enum.Enum):
    """:meth:`ConnectionGuard.check_call`'s answer when the rate limiter is asynchronous."""

    RATE = "rate"
    """Run the call in a task that awaits :meth:`ConnectionGuard.acheck_call` first."""


def rate_key(principal: Principal | None, connection: object) -> Hashable:
    """The rate-limit bucket of ``principal``, or of the anonymous ``connection``."""
    # Namespaced, so that no token subject can name an anonymous connection's bucket.
    if principal is None:
        return ("connection", id(connection))
    return ("principal", principal.subject)


def _limited(principal: Principal | None, tool: str, peer: str, retry: float) -> RateLimited:
    security_logger.info(
        "call to %r by %s rate limited (retry after %.3f s)",
        tool,
        f"connection from {peer}" if principal is None else principal.subject,
        retry,
    )
    return RateLimited("Rate limit exceeded", data={"retry_after": retry})


def _counter(limit: int | None) -> ConnectionCounter | None:
    return None if limit is None else ConnectionCounter(limit)


class ConnectionGuard:
    """Admit handshakes under ``policy`` and count the connections each principal and address hold.

    One guard serves one transport; like the core, it is used from the event
    loop's thread only.
    """

    def __init__(self, policy: SecurityPolicy) -> None:
        self.policy = policy
        limiter = policy.rate_limiter
        # Sorted once, here: a check with the synchronous limiter does exactly
        # what it did before asynchronous ones existed.
        self._limiter: RateLimiter | None = None
        self._async_limiter: AsyncRateLimiter | None = None
        self._unlimited: Deferred | None = None
        if isinstance(limiter, AsyncRateLimiter):
            self._async_limiter = limiter
            self._unlimited = Deferred.RATE
        else:
            self._limiter = limiter
        self._per_principal = _counter(policy.max_connections_per_principal)
        self._per_address = _counter(policy.max_connections_per_address)

    def decide(
        self,
        request: HandshakeRequest,
        address: str | None,
        peer: str,
        *,
        unavailable: str | None = None,
    ) -> Admission | Refusal:
        """Admit ``request`` from ``peer`` (at ``address``), or say how to refuse it.

        ``unavailable`` (why the server takes no connection now: full, or
        shutting down) refuses with 503 first. Every refusal is logged.
        """
        if unavailable is not None:
            security_logger.warning("handshake from %s refused with 503: %s", peer, unavailable)
            return Refusal(503)
        try:
            return self.admit(request, address, now=time.time())
        except HandshakeRefused as refusal:
            # The reason is a fixed phrase (never the token), safe for log and body.
            security_logger.warning(
                "handshake from %s refused: HTTP %d %s", peer, refusal.status, refusal.reason
            )
            return Refusal(refusal.status, f"{refusal.reason}\n", refusal.headers)

    def check_call(
        self, principal: Principal | None, connection: object, tool: str, peer: str, *, now: float
    ) -> RateLimited | Deferred | None:
        """The rate limit's refusal of a call to ``tool`` at ``now`` (monotonic), if any.

        With an asynchronous limiter, always :attr:`Deferred.RATE`: the call's
        task must await :meth:`acheck_call` before the tool runs.
        """
        limiter = self._limiter
        if limiter is None:
            return self._unlimited
        retry = limiter.check(rate_key(principal, connection), tool, now=now)
        if retry <= 0:
            return None
        return _limited(principal, tool, peer, retry)

    async def acheck_call(
        self, principal: Principal | None, connection: object, tool: str, peer: str
    ) -> RateLimited | None:
        """The asynchronous limiter's refusal of a call to ``tool`` now, if any."""
        limiter = self._async_limiter
        if limiter is None:
            return None
        retry = await limiter.acheck(rate_key(principal, connection), tool)
        if retry <= 0:
            return None
        return _limited(principal, tool, peer, retry)

    def admit(self, request: HandshakeRequest, address: str | None, *, now: float) -> Admission:
        """Check ``request`` from ``address`` at ``now`` (POSIX seconds) and take its slots.

        Raises :class:`~securemcp.security.HandshakeRefused`: 403 for a refused
        Origin, 401 for missing or bad credentials, 429 over a connection cap,
        500 if the authenticator itself failed. An admission must be handed to
        :meth:`release` exactly once, when its connection ends.
        """
        try:
            accepted = self.policy.check_handshake(request, now=now)
        except HandshakeRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a plug-in refuses the handshake
            # A custom authenticator's bug. Only the class name is logged: its
            # message could quote the token it choked on.
            security_logger.error(
                "the authenticator raised %s; refusing the handshake", type(exc).__name__
            )
            raise HandshakeRefused(500, "authentication failed") from None
        address_key: Hashable | None = None
        if self._per_address is not None and address is not None:
            address_key = ("address", address)
            if not self._per_address.acquire(address_key):
                raise HandshakeRefused(429, "too many connections from this address")
        principal_key: Hashable | None = None
        if self._per_principal is not None and accepted.principal is not None:
            principal_key = ("principal", accepted.principal.subject)
            if not self._per_principal.acquire(principal_key):
                if address_key is not None and self._per_address is not None:
                    self._per_address.release(address_key)
                raise HandshakeRefused(429, "too many connections for this principal")
        return Admission(accepted.principal, accepted.subprotocols, principal_key, address_key)

    def release(self, admission: Admission, connection: object = None) -> None:
        """Give back the slots of ``connection``, which ended."""
        if admission.principal_key is not None and self._per_principal is not None:
            self._per_principal.release(admission.principal_key)
        if admission.address_key is not None and self._per_address is not None:
            self._per_address.release(admission.address_key)
        limiter = self.policy.rate_limiter
        if limiter is not None and admission.principal is None:
            # An anonymous connection's bucket can never be used again.
            limiter.forget(rate_key(None, connection))

    def open_for_principal(self, subject: str) -> int:
        """How many connections the principal ``subject`` holds (0 when uncapped)."""
        counter = self._per_principal
        return 0 if counter is None else counter.count(("principal", subject))

    def open_for_address(self, address: str) -> int:
        """How many connections ``address`` holds (0 when uncapped)."""
        counter = self._per_address
        return 0 if counter is None else counter.count(("address", address))
