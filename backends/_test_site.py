"""What the test clients of one app share while any of them is connected.

A :class:`Site` stands for the server a :class:`~securemcp.backends.testing.TestClient`
talks to: the transport's settings (limits, timeouts, broker) with its security
policy, its connection caps and rate limits shared by every client of the same
app or transport, as they would be by the connections of one server. It lives
while at least one client is connected; the next client after that gets a new
one (the caps start empty, the transport's own broker and rate limiter stay).

A client given a principal authenticates with a test token only its site
knows: the policy's own handshake check runs (Origin, token extraction), with
an authenticator that maps that token to the principal. Everything after the
handshake (scopes, rate limits, limits, expiry) is the real thing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields, replace

import anyio
import anyio.abc

from securemcp.app import SecureMCP
from securemcp.auth import AuthenticationError, Principal, extract_token
from securemcp.protocol import HandshakeRequest
from securemcp.security import HandshakeAccepted, SecurityPolicy

from ._running import hold_open
from ._security import ConnectionGuard
from ._settings import ServerSettings
from .server import WebSocketTransport

__all__ = ["PrincipalsPolicy", "Site", "issue_token", "join"]

_TEST_TOKEN_PREFIX = "securemcp-test."


def issue_token() -> str:
    """A fresh token for a test principal (a bearer token in form; worthless on a real server)."""
    return _TEST_TOKEN_PREFIX + secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class _Issued:
    """The authenticator of one test token: it stands for ``principal``."""

    principal: Principal

    def authenticate(self, token: str, *, now: float) -> Principal:
        return self.principal


@dataclass(frozen=True, slots=True)
class PrincipalsPolicy(SecurityPolicy):
    """A transport's security policy that also admits the site's test tokens as their principals.

    Its own fields are the transport policy's (the connection guard reads its
    rate limiter and caps); the handshake is checked by that policy itself.
    """

    wrapped: SecurityPolicy = field(default_factory=SecurityPolicy, compare=False)
    """The transport's own policy."""
    principals: dict[str, Principal] = field(default_factory=dict, hash=False, compare=False)
    """The test tokens of the clients connected, and the principal each stands for."""

    @classmethod
    def around(cls, policy: SecurityPolicy, principals: dict[str, Principal]) -> PrincipalsPolicy:
        """``policy``, admitting the tokens of ``principals`` too."""
        own = {
            spec.name: getattr(policy, spec.name) for spec in fields(SecurityPolicy) if spec.init
        }
        return cls(**own, wrapped=policy, principals=principals)

    def check_handshake(self, request: HandshakeRequest, *, now: float) -> HandshakeAccepted:
        try:
            token, _ = extract_token(request.headers, request.subprotocols)
        except AuthenticationError:
            token = None  # two tokens: the policy's own check refuses them, as on the wire
        principal = None if token is None else self.principals.get(token)
        policy = self.wrapped
        if principal is not None:
            policy = replace(policy, authenticator=_Issued(principal))
        return policy.check_handshake(request, now=now)


class Site:
    """The server the test clients of one app or transport share while connected."""

    def __init__(self, transport: WebSocketTransport) -> None:
        self.principals: dict[str, Principal] = {}
        policy = PrincipalsPolicy.around(transport.security, self.principals)
        # No TLS in memory; the rest is the transport's own.
        self.settings: ServerSettings = replace(
            transport._settings, ssl=None, guard=ConnectionGuard(policy)
        )
        self._resources = transport._resources()
        self._clients = 0
        self._closing: anyio.Event | None = None
        # Clients connecting at once wait for the first to open the resources.
        self._opening = anyio.Lock()
        self._entering = 0

    async def _enter(self, task_group: anyio.abc.TaskGroup) -> bool:
        """One more client; the first opens the app's resources in ``task_group``.

        Whether this client opened them (it closes them when it leaves).
        """
        self._entering += 1
        try:
            async with self._opening:
                opens = self._clients == 0 and bool(self._resources)
                if opens:
                    closing = anyio.Event()
                    await task_group.start(hold_open, self._resources, closing)
                    self._closing = closing
                self._clients += 1
                return opens
        finally:
            self._entering -= 1

    def leave(self, target: SecureMCP | WebSocketTransport, token: str | None, owner: bool) -> None:
        """A client of ``target`` left: forget its token, close the resources if it opened them."""
        if token is not None:
            self.principals.pop(token, None)
        if owner and self._closing is not None:
            self._closing.set()
        self._clients -= 1
        if self._clients == 0 and _sites.get(target) is self:
            del _sites[target]


_sites: dict[SecureMCP | WebSocketTransport, Site] = {}
"""The sites with clients connected, by what the clients were given."""


async def join(
    target: SecureMCP | WebSocketTransport, task_group: anyio.abc.TaskGroup
) -> tuple[Site, bool]:
    """The site of ``target`` (an app: served as ``WebSocketTransport(app)`` would serve it),
    and whether this client opened its resources."""
    site = _sites.get(target)
    if site is None:
        transport = target if isinstance(target, WebSocketTransport) else WebSocketTransport(target)
        site = _sites[target] = Site(transport)
    try:
        return site, await site._enter(task_group)
    except BaseException:
        # The resources did not open: the next client tries again, on this site if it
        # is waiting already.
        if site._clients == 0 and not site._entering:
            del _sites[target]
        raise
