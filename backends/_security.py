"""A server's :class:`~securemcp.SecurityPolicy` applied to live connections.

The policy itself is pure (:mod:`securemcp.security`); what it cannot know is
what is open right now. :class:`ConnectionGuard` adds that state for one
transport: the connection caps per principal and per client address, acquired
when a handshake is admitted and released when the connection ends. A cap
given as an :class:`~securemcp.ratelimit.AsyncConnectionCounter` (shared
through Redis) is taken by :meth:`ConnectionGuard.acquire_shared` and given
back by :meth:`ConnectionGuard.release_shared`, awaited in tasks of the driver's.

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
from securemcp.ratelimit import (
    AsyncConnectionCounter,
    AsyncRateLimiter,
    ConnectionCounter,
    RateLimiter,
)
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


def rate_key(
    principal: Principal | None, connection: object, address: str | None = None
) -> Hashable:
    """The rate-limit bucket of ``principal``; an anonymous caller's is its ``connection``'s,
    or its client ``address``'s when given (HTTP requests)."""
    # Namespaced, so that no token subject can name an anonymous bucket.
    if principal is None:
        # Each HTTP request may come on a new connection: a bucket per connection
        # would not limit anonymous requests at all, so they share their address's.
        if address is not None:
            return ("address", address)
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


_Cap = tuple[ConnectionCounter | None, AsyncConnectionCounter | None]


def _counter(limit: int | AsyncConnectionCounter | None) -> _Cap:
    """A cap's counter: a local one for a number, else the shared one given."""
    if limit is None:
        return None, None
    if isinstance(limit, AsyncConnectionCounter):
        return None, limit
    return ConnectionCounter(limit), None


def _refused(
    peer: str, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()
) -> Refusal:
    security_logger.warning("handshake from %s refused: HTTP %d %s", peer, status, reason)
    return Refusal(status, f"{reason}\n", headers)


_TOO_MANY_ADDRESS = "too many connections from this address"
_TOO_MANY_PRINCIPAL = "too many connections for this principal"
RETRY_AFTER = ("retry-after", "1")
"""Sent with a 429 over a connection cap: a slot comes back when one of the holder's
connections ends, which the server cannot foresee; a second is a polite first wait."""


def _over_cap(reason: str) -> HandshakeRefused:
    return HandshakeRefused(429, reason, (RETRY_AFTER,))


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
        self._per_principal, self._shared_principal = _counter(policy.max_connections_per_principal)
        self._per_address, self._shared_address = _counter(policy.max_connections_per_address)
        self.shared = self._shared_principal is not None or self._shared_address is not None
        """Whether a cap is shared: admitted handshakes then await :meth:`acquire_shared`."""
        self.capped = self.shared or (
            self._per_principal is not None or self._per_address is not None
        )
        """Whether any connection cap applies (per principal or per address)."""
        self.proxies = policy.proxies or None
        """The trusted reverse proxies (``None``: none, so no header is ever read)."""

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
            return self.unavailable(peer, unavailable)
        try:
            return self.admit(request, address, now=time.time())
        except HandshakeRefused as refusal:
            # The reason is a fixed phrase (never the token), safe for log and body.
            security_logger.warning(
                "handshake from %s refused: HTTP %d %s", peer, refusal.status, refusal.reason
            )
            return Refusal(refusal.status, f"{refusal.reason}\n", refusal.headers)

    def unavailable(self, peer: str, reason: str) -> Refusal:
        """Refuse the handshake from ``peer`` with 503, because of ``reason`` (logged)."""
        security_logger.warning("handshake from %s refused with 503: %s", peer, reason)
        return Refusal(503)

    def check_call(
        self,
        principal: Principal | None,
        connection: object,
        tool: str,
        peer: str,
        *,
        now: float,
        address: str | None = None,
    ) -> RateLimited | Deferred | None:
        """The rate limit's refusal of a call to ``tool`` at ``now`` (monotonic), if any.

        ``address`` keys an anonymous caller by client address (HTTP), see
        :func:`rate_key`. With an asynchronous limiter, always
        :attr:`Deferred.RATE`: the call's task must await :meth:`acheck_call`
        before the tool runs.
        """
        limiter = self._limiter
        if limiter is None:
            return self._unlimited
        retry = limiter.check(rate_key(principal, connection, address), tool, now=now)
        if retry <= 0:
            return None
        return _limited(principal, tool, peer, retry)

    async def acheck_call(
        self,
        principal: Principal | None,
        connection: object,
        tool: str,
        peer: str,
        *,
        address: str | None = None,
    ) -> RateLimited | None:
        """The asynchronous limiter's refusal of a call to ``tool`` now, if any."""
        limiter = self._async_limiter
        if limiter is None:
            return None
        retry = await limiter.acheck(rate_key(principal, connection, address), tool)
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
        return self.take(address, accepted.principal, accepted.subprotocols)

    def principal_key(self, principal: Principal | None) -> Hashable | None:
        """The per-principal slot ``principal`` needs (``None``: anonymous, or no such cap)."""
        capped = self._per_principal is not None or self._shared_principal is not None
        return ("principal", principal.subject) if principal is not None and capped else None

    def take(
        self,
        address: str | None,
        principal: Principal | None,
        subprotocols: tuple[str, ...] = (),
    ) -> Admission:
        """Take the local slots of a connection from ``address`` (if given) for ``principal``.

        Raises :class:`~securemcp.security.HandshakeRefused` (429, with
        ``Retry-After``) over a cap, having taken nothing. A shared cap's key
        is named here, its slot taken by :meth:`acquire_shared`.
        """
        address_key: Hashable | None = None
        capped = self._per_address is not None or self._shared_address is not None
        if address is not None and capped:
            address_key = ("address", address)
            if self._per_address is not None and not self._per_address.acquire(address_key):
                raise _over_cap(_TOO_MANY_ADDRESS)
        principal_key = self.principal_key(principal)
        local = self._per_principal
        if principal_key is not None and local is not None and not local.acquire(principal_key):
            if address_key is not None and self._per_address is not None:
                self._per_address.release(address_key)
            raise _over_cap(_TOO_MANY_PRINCIPAL)
        return Admission(principal, subprotocols, principal_key, address_key)

    async def acquire_shared(self, admission: Admission, peer: str) -> Admission | Refusal:
        """Take ``admission``'s slots under the shared caps, or refuse with 429.

        A refusal gives back every slot the admission held (its local ones
        too); a counter that fails refuses with 500. Either way the admission
        is then spent: do not :meth:`release` it.
        """
        address, principal = self._shared_address, self._shared_principal
        taken: list[tuple[AsyncConnectionCounter, Hashable]] = []
        try:
            for counter, key, reason in (
                (address, admission.address_key, _TOO_MANY_ADDRESS),
                (principal, admission.principal_key, _TOO_MANY_PRINCIPAL),
            ):
                if counter is None or key is None:
                    continue
                if not await counter.acquire(key):
                    await self._give_back(admission, taken)
                    return _refused(peer, 429, reason, (RETRY_AFTER,))
                taken.append((counter, key))
        except Exception as exc:  # noqa: BLE001 - a plug-in's failure refuses the handshake
            security_logger.error(
                "the connection counter raised %s; refusing the handshake", type(exc).__name__
            )
            await self._give_back(admission, taken)
            return _refused(peer, 500, "connection cap unavailable")
        return admission

    async def _give_back(
        self, admission: Admission, taken: list[tuple[AsyncConnectionCounter, Hashable]]
    ) -> None:
        self.release(admission)
        for counter, key in taken:
            await _release(counter, key)

    async def release_shared(self, admission: Admission) -> None:
        """Give back the shared slots of a connection that ended (local ones: :meth:`release`)."""
        if admission.address_key is not None and self._shared_address is not None:
            await _release(self._shared_address, admission.address_key)
        if admission.principal_key is not None and self._shared_principal is not None:
            await _release(self._shared_principal, admission.principal_key)

    def release(self, admission: Admission, connection: object = None) -> None:
        """Give back the local slots of ``connection``, which ended."""
        if admission.principal_key is not None and self._per_principal is not None:
            self._per_principal.release(admission.principal_key)
        if admission.address_key is not None and self._per_address is not None:
            self._per_address.release(admission.address_key)
        limiter = self.policy.rate_limiter
        if limiter is not None and admission.principal is None:
            # An anonymous connection's bucket can never be used again.
            limiter.forget(rate_key(None, connection))

    def open_for_principal(self, subject: str) -> int:
        """How many connections the principal ``subject`` holds here (0 when uncapped)."""
        return _held(self._per_principal, self._shared_principal, ("principal", subject))

    def open_for_address(self, address: str) -> int:
        """How many connections ``address`` holds here (0 when uncapped)."""
        return _held(self._per_address, self._shared_address, ("address", address))


def _held(
    local: ConnectionCounter | None, shared: AsyncConnectionCounter | None, key: Hashable
) -> int:
    """What this process holds for ``key`` under a cap (a shared one's share, without I/O)."""
    if local is not None:
        return local.count(key)
    return 0 if shared is None else shared.held(key)


async def _release(counter: AsyncConnectionCounter, key: Hashable) -> None:
    try:
        await counter.release(key)
    except Exception as exc:  # noqa: BLE001 - a plug-in's failure must not end the server
        security_logger.error("the connection counter raised %s on release", type(exc).__name__)
