"""What a tool may learn about the call it serves, and how it reaches the broadcast.

A tool that declares a parameter annotated ``Context`` receives one; that
parameter is not part of the tool's input schema and a caller cannot set it.

>>> from securemcp import Context, SecureMCP
>>> app = SecureMCP("demo")
>>> @app.tool()
... def whoami(ctx: Context) -> str:
...     return ctx.principal.subject if ctx.principal else "anonymous"

Through :meth:`Context.subscribe` and :meth:`Context.publish` a tool subscribes
its caller's connection to a topic and pushes notifications to every
connection subscribed to one (see :mod:`securemcp.pubsub`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .auth import Principal

if TYPE_CHECKING:
    from .pubsub import Session

__all__ = ["Context"]


@dataclass(frozen=True, slots=True)
class Context:
    """The call's circumstances, handed to tools that ask for them."""

    principal: Principal | None
    """Who is calling (``None`` for an anonymous connection)."""
    request_id: str | int
    """The caller's id for this call."""
    tool_name: str
    """The name the tool was called by."""
    session: Session | None = None
    """The connection's broadcast session (``None`` when the server has none)."""

    def _session(self) -> Session:
        if self.session is None:
            raise RuntimeError("this connection has no broadcast session (no broker)")
        return self.session

    def subscribe(self, topic: str) -> None:
        """Subscribe the caller's connection to ``topic``: it receives what is published there."""
        self._session().subscribe(topic)

    async def subscriptions_live(self) -> bool:
        """Wait until the caller's subscriptions receive what other processes publish.

        With a broker spanning processes (:class:`~securemcp.redis.RedisBroker`)
        a new subscription is local at once and live everywhere a round trip
        later; a tool that must not miss a message published elsewhere right
        after it subscribed awaits this. ``False`` when that could not be
        confirmed in time (the broker's Redis is unreachable). Immediate with
        the in-process broker.
        """
        return await self._session().live()

    def unsubscribe(self, topic: str) -> bool:
        """Unsubscribe the caller's connection from ``topic``; whether it was subscribed."""
        return self._session().unsubscribe(topic)

    def publish(self, topic: str, method: str, params: Any = None) -> int:
        """Push notification ``method(params)`` to every connection subscribed to ``topic``.

        Returns how many connections it was delivered to (the caller's own
        included, if subscribed). Never blocks on a slow receiver.
        """
        return self._session().publish(topic, method, params)

    def subscriber_count(self, topic: str) -> int:
        """How many connections are subscribed to ``topic``."""
        return self._session().subscriber_count(topic)

    def topics(self) -> list[str]:
        """The topics that have at least one subscriber, on this server's broker."""
        return self._session().topics()

    @property
    def subscriptions(self) -> frozenset[str]:
        """The topics the caller's connection is subscribed to (empty without a session)."""
        return frozenset() if self.session is None else self.session.subscriptions
