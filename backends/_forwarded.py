"""The client behind a trusted reverse proxy, as the driver names it (see :mod:`securemcp.proxies`).

A driver's ``address`` keys the per-address connection cap and the rate limit
of anonymous HTTP requests, and its ``peer`` names the connection in the log.
From a trusted proxy both become the client's: ``203.0.113.7`` and
``203.0.113.7 via ('127.0.0.1', 40112)``. A WebSocket connection is one
client's, resolved once from its upgrade request; a plain HTTP connection from
a proxy carries the requests of many (proxies pool their upstream keep-alive
connections), so each request is resolved anew (``HTTPEndpoint``).

Without trusted proxies (the default) none of this runs: the guard's
``proxies`` is ``None`` and the header is never looked at.
"""

from __future__ import annotations

from collections.abc import Iterable

from securemcp.proxies import TrustedProxies, client_address

__all__ = ["ProxyPeer", "proxy_peer"]


class ProxyPeer:
    """A connection's socket peer that is a trusted proxy: whom does it forward?"""

    __slots__ = ("address", "peer", "proxies")

    def __init__(self, proxies: TrustedProxies, address: str, peer: str) -> None:
        self.proxies = proxies
        self.address = address
        """The proxy's IP address."""
        self.peer = peer
        """The proxy's name in the log (the socket's peer)."""

    def client(self, headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
        """The address and log name of the client a request with ``headers`` came from.

        The log name is ``"<client> via <proxy>"`` when the request was
        forwarded, the proxy's own when it was not (no usable header).
        """
        client = client_address(self.address, headers, self.proxies)
        if client == self.address:
            return self.address, self.peer
        return client, f"{client} via {self.peer}"


def proxy_peer(proxies: TrustedProxies | None, address: str | None, peer: str) -> ProxyPeer | None:
    """The :class:`ProxyPeer` of a socket peer at ``address`` if it is a trusted proxy."""
    if proxies is None or address is None or not proxies.trusts(address):
        return None
    return ProxyPeer(proxies, address, peer)
