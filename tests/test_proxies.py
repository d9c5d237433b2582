"""Trusted proxies and the ``X-Forwarded-For`` walk (``securemcp.proxies``), without sockets.

Which address a request from a peer counts as: the table below covers IPv4 and
IPv6, spaces, several header lines, ports (ignored), garbage, empty entries, a
chain of trusted proxies and an untrusted peer spoofing a header.
"""

from __future__ import annotations

import dataclasses

import pytest

from securemcp import SecurityPolicy
from securemcp.proxies import TrustedProxies, client_address

PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])


def xff(*values: str) -> list[tuple[str, str]]:
    """Request headers with one ``X-Forwarded-For`` line per value, among others."""
    return [("host", "example"), *(("x-forwarded-for", value) for value in values), ("accept", "*")]


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # No header, or a peer that is no trusted proxy: the peer itself.
        ("127.0.0.1", xff(), "127.0.0.1"),
        ("198.51.100.9", xff("203.0.113.7"), "198.51.100.9"),
        ("198.51.100.9", xff(), "198.51.100.9"),
        # One hop, then the rightmost untrusted entry of a longer chain.
        ("127.0.0.1", xff("203.0.113.7"), "203.0.113.7"),
        ("127.0.0.1", xff("192.0.2.1, 203.0.113.7, 10.1.2.3"), "203.0.113.7"),
        # A client's own (spoofed) entries left of the real one are never reached.
        ("127.0.0.1", xff("6.6.6.6, 203.0.113.7"), "203.0.113.7"),
        ("127.0.0.1", xff("garbage, 203.0.113.7"), "203.0.113.7"),
        # Spaces and tabs around entries.
        ("127.0.0.1", xff(" 203.0.113.7 ,\t10.0.0.2 "), "203.0.113.7"),
        # Several lines are one list, in order.
        ("127.0.0.1", xff("203.0.113.7", "10.0.0.2"), "203.0.113.7"),
        ("127.0.0.1", xff("10.0.0.2", "203.0.113.7"), "203.0.113.7"),
        ("127.0.0.1", xff("192.0.2.1, 10.0.0.3", "10.0.0.2"), "192.0.2.1"),
        # Every entry a trusted proxy: the leftmost.
        ("127.0.0.1", xff("10.0.0.3, 10.0.0.2"), "10.0.0.3"),
        ("10.9.9.9", xff("127.0.0.1"), "127.0.0.1"),
        # IPv6, canonical form; an IPv4-mapped address is the IPv4 one.
        ("::1", xff("2001:DB8:0:0::7"), "2001:db8::7"),
        ("::1", xff("2001:db8::7, fd00::1"), "2001:db8::7"),
        ("127.0.0.1", xff("::ffff:203.0.113.7"), "203.0.113.7"),
        ("::ffff:127.0.0.1", xff("203.0.113.7"), "203.0.113.7"),
        ("127.0.0.1", xff("::ffff:10.0.0.5"), "10.0.0.5"),
        # Ports are ignored.
        ("127.0.0.1", xff("203.0.113.7:4711"), "203.0.113.7"),
        ("127.0.0.1", xff("[2001:db8::7]:4711"), "2001:db8::7"),
        ("127.0.0.1", xff("[2001:db8::7]"), "2001:db8::7"),
        ("127.0.0.1", xff("203.0.113.7, 10.0.0.2:80"), "203.0.113.7"),
        # Empty entries are skipped; an empty list is no header.
        ("127.0.0.1", xff("203.0.113.7,, 10.0.0.2,"), "203.0.113.7"),
        ("127.0.0.1", xff(""), "127.0.0.1"),
        ("127.0.0.1", xff(" , "), "127.0.0.1"),
        # Garbage where the walk stops: the peer, never the string.
        ("127.0.0.1", xff("unknown"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.7, evil.example"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.7, garbage, 10.0.0.2"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.7:port"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.7:"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.7:123456"), "127.0.0.1"),
        ("127.0.0.1", xff("[2001:db8::7]:"), "127.0.0.1"),
        ("127.0.0.1", xff("[2001:db8::7"), "127.0.0.1"),
        ("127.0.0.1", xff("[2001:db8::7]x"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.007"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.0/24"), "127.0.0.1"),
        # Digits that are not ASCII (full width), in the address or the port.
        ("127.0.0.1", xff("\uff12\uff10\uff13.0.113.7"), "127.0.0.1"),
        ("127.0.0.1", xff("203.0.113.7:\uff18\uff10"), "127.0.0.1"),
        ("127.0.0.1", xff('for="203.0.113.7"'), "127.0.0.1"),
        # A peer that is not an IP address at all trusts nothing.
        ("?", xff("203.0.113.7"), "?"),
    ],
)
def test_the_client_address_of_a_request(
    peer: str, headers: list[tuple[str, str]], client: str
) -> None:
    assert client_address(peer, headers, PROXIES) == client


def test_only_the_x_forwarded_for_header_is_read() -> None:
    headers = [("x-real-ip", "203.0.113.7"), ("forwarded", "for=203.0.113.8")]
    assert client_address("127.0.0.1", headers, PROXIES) == "127.0.0.1"


def test_no_trusted_proxies_believe_no_header() -> None:
    assert client_address("127.0.0.1", xff("203.0.113.7"), TrustedProxies()) == "127.0.0.1"
    assert not TrustedProxies()
    assert PROXIES
    proxies = TrustedProxies(["10.0.0.0/8", "::1"])
    assert repr(proxies) == "TrustedProxies(['10.0.0.0/8', '::1/128'])"


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.255.0.1", True),
        ("11.0.0.1", False),
        ("::1", True),
        ("fd12::3", True),
        ("2001:db8::1", False),
        ("::ffff:10.0.0.1", True),
        ("localhost", False),
        ("", False),
    ],
)
def test_which_peers_are_trusted(address: str, trusted: bool) -> None:
    assert PROXIES.trusts(address) is trusted


@pytest.mark.parametrize(
    "entry", ["10.0.0.1/8", "localhost", "*", "10.0.0.0/33", "", " 127.0.0.1", "1"]
)
def test_a_policy_with_an_invalid_trusted_proxy_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="trusted proxy") as refused:
        SecurityPolicy(trusted_proxies=("127.0.0.1", entry))
    assert repr(entry) in str(refused.value)


def test_a_lone_string_or_a_non_string_is_refused() -> None:
    with pytest.raises(TypeError, match="not one string"):
        SecurityPolicy(trusted_proxies="127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a string"):
        SecurityPolicy(trusted_proxies=(2130706433,))  # type: ignore[arg-type]


def test_the_policy_parses_its_proxies_once_and_keeps_them_through_replace() -> None:
    policy = SecurityPolicy(trusted_proxies=["10.0.0.0/8"])  # type: ignore[arg-type]
    assert policy.trusted_proxies == ("10.0.0.0/8",)
    assert policy.proxies.trusts("10.1.1.1")
    assert not SecurityPolicy().proxies
    changed = dataclasses.replace(policy, trusted_proxies=("192.0.2.0/24",))
    assert changed.proxies.trusts("192.0.2.9")
    assert not changed.proxies.trusts("10.1.1.1")
    assert dataclasses.replace(policy, realm="other").proxies.trusts("10.1.1.1")
