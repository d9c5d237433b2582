"""The connection caps on plain HTTP connections (MCP Streamable HTTP), as on WebSocket ones.

A keep-alive HTTP connection is a connection like a WebSocket one, and holds
the same :class:`~securemcp.SecurityPolicy` slots:

- ``max_connections_per_address``: its client address's slot, taken by its
  first request to the MCP endpoint and held until the connection ends (none
  for a connection from a trusted proxy: its requests are many clients', each
  rate-limited by its own forwarded address);
- ``max_connections_per_principal``: the slot of the principal its requests
  carry (a bearer token's subject), taken by the first request that carries
  it and held until the connection ends, or until a request on it carries
  another principal, whose slot then replaces it. Anonymous requests take none.

Over a cap the request gets 429 with ``Retry-After`` and the connection
closes (``Connection: close``): what a WebSocket handshake over a cap gets.
The slots live in the driver's admission, so that ``connection_lost`` gives
them back however the connection ends (answered, aborted, timed out).

A shared cap (:class:`~securemcp.ratelimit.AsyncConnectionCounter`, through
Redis) is decided in a task, as for a WebSocket handshake (``_handshake.py``):
the request waits, its deadline the handshake timeout, then is served from the
start (its slots now held, nothing is asked twice). A connection that ended
meanwhile has the task give the slots back.

These functions are the driver's own, kept apart: they use its private state.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from securemcp.auth import Principal
from securemcp.protocol import HTTPRequestReceived
from securemcp.security import HandshakeRefused

from ._handshake import release_slots
from ._security import Admission, Refusal, security_logger

if TYPE_CHECKING:
    from ._driver import ConnectionDriver
    from ._http_serve import HTTPEndpoint

__all__ = ["hold_slots"]


def hold_slots(
    endpoint: HTTPEndpoint, request: HTTPRequestReceived, principal: Principal | None
) -> bool:
    """Whether ``request``'s connection holds the slots it needs, so that it is served now.

    ``False``: refused (answered), or awaiting a shared cap (answered later).
    """
    driver = endpoint.driver
    guard = driver.settings.guard
    held = driver._admission
    if held is not None and held.principal_key == guard.principal_key(principal):
        return True
    try:
        # The address's slot with the connection's first request only, and never
        # for a trusted proxy's connection: it carries the requests of many clients.
        first = held is None and endpoint.via is None
        part = guard.take(driver.address if first else None, principal)
    except HandshakeRefused as refusal:
        security_logger.warning(
            "HTTP request from %s refused: HTTP %d %s", driver.peer, refusal.status, refusal.reason
        )
        endpoint.refuse(refusal.status, refusal.reason, refusal.headers)
        return False
    if guard.shared:
        driver._pending = part
        timeout = driver.settings.handshake_timeout
        if timeout is not None:
            driver._arm(driver.adapter.now() + timeout)
        driver.adapter.start(partial(_acquire_shared, endpoint, request, part))
        return False
    _hold(driver, part)
    return True


def _hold(driver: ConnectionDriver, part: Admission) -> None:
    """Make ``part``'s slots the connection's: its address's once, its principal's now."""
    held = driver._admission
    if held is None:
        driver._admission = part
        return
    if held.principal_key is not None:
        # Another principal on the same connection: its slot replaces the last one's.
        release_slots(driver, Admission(held.principal, (), held.principal_key))
    driver._admission = Admission(part.principal, (), part.principal_key, held.address_key)


async def _acquire_shared(
    endpoint: HTTPEndpoint, request: HTTPRequestReceived, part: Admission
) -> None:
    driver = endpoint.driver
    guard = driver.settings.guard
    verdict = await guard.acquire_shared(part, driver.peer)
    if driver._pending is not part or driver.finished:
        # The connection ended while we waited: nobody else will give the slots back.
        driver._pending = None
        if isinstance(verdict, Admission):
            guard.release(verdict, driver)
            await guard.release_shared(verdict)
        return
    driver._pending = None
    if isinstance(verdict, Refusal):
        endpoint.refuse(verdict.status, (verdict.body or "").strip(), verdict.headers)
    else:
        _hold(driver, verdict)
        endpoint.on_request(request)
    driver._handle_events()
    driver.adapter.wake()
