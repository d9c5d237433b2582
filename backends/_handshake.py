"""A connection driver's handshake: from its ``HandshakeRequest`` to ``accept()`` or ``reject()``.

Decided in the pass that read the request, unless a connection cap is shared
(an :class:`~securemcp.ratelimit.AsyncConnectionCounter`, through Redis). Then
the checks that need no I/O still decide at once (503 when full or draining,
Origin, credentials, the local caps), and only a handshake they admit waits,
in a task its adapter runs (``Adapter.start``), for the shared counter's
answer. Meanwhile the core holds whatever the client pipelined behind its
request, reading pauses, and the handshake deadline still runs.

That task owns the slots it took until it hands them to the connection: if the
connection ended meanwhile (the handshake timed out, the server went away, the
peer vanished), it gives them back itself; if the server started draining, it
refuses with 503 and gives them back. Once handed over, they are given back when
the connection ends (``ConnectionDriver.connection_lost``: the shared ones in a
task, which a draining server waits for before it closes the counter).

These functions are the driver's own methods, kept apart: they use its private state.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import TYPE_CHECKING

from securemcp.protocol import ConnectionState, HandshakeRequest

from ._forwarded import proxy_peer
from ._pubsub import ConnectionSession
from ._security import Admission, Refusal
from ._settings import choose_subprotocol

if TYPE_CHECKING:
    from ._driver import ConnectionDriver

__all__ = ["decide", "release_slots"]

logger = logging.getLogger("securemcp")


def decide(driver: ConnectionDriver, request: HandshakeRequest) -> None:
    """Answer ``request`` now, or start awaiting the shared caps for it."""
    unavailable: str | None = None
    if driver.server.draining:
        unavailable = "server shutting down"
    elif driver._refuse:
        unavailable = "max_connections reached"
    guard = driver.settings.guard
    if guard.proxies is not None:
        via = proxy_peer(guard.proxies, driver.address, driver.peer)
        if via is not None:
            # Through a trusted proxy, the connection is the forwarded client's.
            driver.address, driver.peer = via.client(request.headers)
    admission = guard.decide(request, driver.address, driver.peer, unavailable=unavailable)
    if isinstance(admission, Refusal):
        driver.conn.reject(admission.status, admission.body, admission.headers)
        return
    if guard.shared:
        driver._pending = admission
        driver.adapter.start(partial(_admit_shared, driver, admission))
        return
    driver._admission = admission
    _open(driver, admission)


async def _admit_shared(driver: ConnectionDriver, admission: Admission) -> None:
    guard = driver.settings.guard
    verdict = await guard.acquire_shared(admission, driver.peer)
    if driver._pending is not admission or driver.conn.state is not ConnectionState.CONNECTING:
        # The connection ended while we waited: nobody else will give the slots back.
        if isinstance(verdict, Admission):
            guard.release(verdict, driver)
            await guard.release_shared(verdict)
        return
    driver._pending = None
    refused = False
    if isinstance(verdict, Admission) and driver.server.draining:
        verdict = guard.unavailable(driver.peer, "server shutting down")
        refused = True
    if isinstance(verdict, Refusal):
        driver.conn.reject(verdict.status, verdict.body, verdict.headers)
    else:
        driver._admission = verdict
        _open(driver, verdict)
    # accept() let the requests pipelined behind the handshake in: act on them.
    driver._handle_events()
    driver.adapter.wake()
    if refused:
        guard.release(admission, driver)
        await guard.release_shared(admission)


def release_slots(driver: ConnectionDriver, admission: Admission) -> None:
    """Give back the slots of ``driver``'s connection, which ended (shared ones in a task)."""
    guard = driver.settings.guard
    guard.release(admission, driver)
    if guard.shared:
        driver.adapter.start(partial(guard.release_shared, admission))


def _open(driver: ConnectionDriver, admission: Admission) -> None:
    """Accept the upgrade for ``admission``'s principal and start the connection's clocks."""
    principal = admission.principal
    broker = driver.settings.broker
    conn = driver.conn
    if broker is not None:
        # Before accept(): requests pipelined behind the handshake run in it.
        driver._session = ConnectionSession(
            conn,
            broker,
            wake=driver.adapter.wake,
            handle_events=driver._handle_events,
            pending=driver.pending_output,
            loop=driver.server.loop,
            peer=driver.peer,
        )
        conn.session = driver._session
    conn.accept(choose_subprotocol(driver.settings, admission.subprotocols), principal=principal)
    logger.debug(
        "connection from %s accepted for %s",
        driver.peer,
        "anonymous" if principal is None else principal.subject,
    )
    driver._keepalive.start(driver.adapter.now())
    if principal is not None and principal.expires_at is not None:
        driver._expires_at = principal.expires_at
        driver._arm(math.inf)
        driver._check_expiry()
    else:
        driver._arm(math.inf)
