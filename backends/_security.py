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

import logging
from collections.abc import Hashable
from dataclasses import dataclass

from securemcp.auth import Principal
from securemcp.protocol import HandshakeRequest
from securemcp.ratelimit import ConnectionCounter
from securemcp.security import HandshakeRefused, SecurityPolicy

__all__ = ["Admission", "ConnectionGuard", "security_logger"]

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


def _counter(limit: int | None) -> ConnectionCounter | None:
    return None if limit is None else ConnectionCounter(limit)


class ConnectionGuard:
    """Admit handshakes under ``policy`` and count the connections each principal and address hold.

    One guard serves one transport; like the core, it is used from the event
    loop's thread only.
    """

    def __init__(self, policy: SecurityPolicy) -> None:
        self.policy = policy
        self._per_principal = _counter(policy.max_connections_per_principal)
        self._per_address = _counter(policy.max_connections_per_address)

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

    def release(self, admission: Admission) -> None:
        """Give back the slots of a connection that ended."""
        if admission.principal_key is not None and self._per_principal is not None:
            self._per_principal.release(admission.principal_key)
        if admission.address_key is not None and self._per_address is not None:
            self._per_address.release(admission.address_key)

    def open_for_principal(self, subject: str) -> int:
        """How many connections the principal ``subject`` holds (0 when uncapped)."""
        counter = self._per_principal
        return 0 if counter is None else counter.count(("principal", subject))

    def open_for_address(self, address: str) -> int:
        """How many connections ``address`` holds (0 when uncapped)."""
        counter = self._per_address
        return 0 if counter is None else counter.count(("address", address))
