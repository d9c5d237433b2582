"""Trusted reverse proxies: who the client is when a proxy forwards its requests.

Behind a reverse proxy every connection comes from the proxy's address; the
client's own is in the ``X-Forwarded-For`` header the proxy appends to. That
header is believed only from a peer the deployment lists as a trusted proxy
(:attr:`securemcp.SecurityPolicy.trusted_proxies`): anyone else could write any
address there and so escape the limits keyed on its own.

The walk (:func:`client_address`), as uvicorn's and Werkzeug's do it: every
``X-Forwarded-For`` line, in order, joined by commas, is read from the right,
each proxy having appended the address it was connected from. Entries that are
trusted proxies are passed over; the first that is not is the client. If every
entry is a trusted proxy, the leftmost is the client. An entry that is not an
IP address where the walk stops (``unknown``, a host name, garbage) makes the
client the peer itself: an address that cannot be checked is never used.

Entries may carry a port (``203.0.113.7:4711``, ``[2001:db8::7]:4711``, as some
load balancers write them): it is ignored, as the connection caps and rate
limits key on the address alone. Empty entries (``a,,b``) are skipped, as HTTP
list headers allow. A forwarded address is named in its canonical form
(``2001:db8::7``, an IPv4-mapped IPv6 address as IPv4), so that one client has
one key however a proxy spells it.

Pure, like the rest of :mod:`securemcp`: ``ipaddress`` is the only import.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

__all__ = ["TrustedProxies", "client_address"]

_IPAddress = IPv4Address | IPv6Address


class TrustedProxies:
    """A set of proxy addresses and networks, parsed once (``ValueError`` for a bad entry).

    Entries are IP addresses (``"127.0.0.1"``, ``"::1"``) or CIDR networks
    (``"10.0.0.0/8"``, ``"fd00::/8"``); a network's host bits must be zero.
    Empty: no peer is trusted, so no header is ever believed.
    """

    __slots__ = ("_networks",)

    def __init__(self, entries: Iterable[str] = ()) -> None:
        if isinstance(entries, str | bytes):
            # A lone string would be read as its characters.
            raise TypeError("trusted proxies must be a sequence of strings, not one string")
        networks: list[IPv4Network | IPv6Network] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise TypeError(f"a trusted proxy must be a string, not {type(entry).__name__}")
            try:
                networks.append(ip_network(entry))
            except ValueError:
                raise ValueError(
                    f"trusted proxy {entry!r} is neither an IP address nor a CIDR network"
                    " (without host bits)"
                ) from None
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(network) for network in self._networks]!r})"

    def trusts(self, address: str) -> bool:
        """Whether ``address`` (an IP address, as a socket names its peer) is a trusted proxy."""
        if not self._networks:
            return False
        parsed = _parse(address)
        return parsed is not None and self.contains(parsed)

    def contains(self, address: IPv4Address | IPv6Address) -> bool:
        """Whether the parsed ``address`` is in one of the trusted networks."""
        # A network of the other IP version simply does not contain the address.
        return any(address in network for network in self._networks)


def client_address(peer: str, headers: Iterable[tuple[str, str]], proxies: TrustedProxies) -> str:
    """The client's address for a request from ``peer`` with ``headers``.

    ``headers`` are (lower-case name, value) pairs, as the core reports them.
    ``peer`` itself, unless it is one of ``proxies`` and its ``X-Forwarded-For``
    names a client (the walk in the module's docstring).
    """
    if not proxies.trusts(peer):
        return peer
    entries = ",".join(value for name, value in headers if name == "x-forwarded-for").split(",")
    client = peer
    for entry in reversed(entries):
        entry = entry.strip(" \t")
        if not entry:
            continue
        address = _parse_entry(entry)
        if address is None:
            return peer
        client = str(address)
        if not proxies.contains(address):
            return client
    return client


def _parse(text: str) -> _IPAddress | None:
    """``text`` as an IP address (an IPv4-mapped IPv6 one as IPv4), or ``None``."""
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_entry(entry: str) -> _IPAddress | None:
    """An ``X-Forwarded-For`` entry's address, its port (if any) dropped; ``None``: not one."""
    host = entry
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
    elif entry.count(":") == 1:
        # One colon: an IPv4 address and a port (an IPv6 address has at least two).
        host, _, port = entry.partition(":")
        if not _is_port(port):
            return None
    return _parse(host)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5
