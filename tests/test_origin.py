"""The Origin allowlist: exact matches only."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemcp import SecureMCP
from securemcp.origin import OriginPolicy
from securemcp.protocol import ClientConnection, HandshakeRequest, ServerConnection

ALLOWED = OriginPolicy(["https://a.com", "http://localhost:8080", "http://[::1]:3000"])


@pytest.mark.parametrize(
    "origin",
    [
        "https://a.com",
        "https://a.com:443",
        "HTTPS://A.COM",
        "https://A.com:0443",
        "http://localhost:8080",
        "http://LOCALHOST:8080",
        "http://[::1]:3000",
    ],
)
def test_allowed_origins(origin: str) -> None:
    assert ALLOWED.check(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "https://a.com.evil.net",
        "https://evil-a.com",
        "https://a.com.",
        "https://sub.a.com",
        "http://a.com",
        "wss://a.com",
        "https://a.com:8443",
        "https://a.com/",
        "https://a.com/path",
        "https://user@a.com",
        "https://a.com:99999",
        " https://a.com",
        "https://a.com https://b.com",
        "https://a.com, https://b.com",
        "http://localhost",
        "http://localhost:80",
        "http://localhost:8081",
        "http://[::1]",
        "null",
        "",
        "a.com",
        "*",
    ],
)
def test_refused_origins(origin: str) -> None:
    assert not ALLOWED.check(origin)


def test_missing_origin_is_allowed_unless_configured_otherwise() -> None:
    assert ALLOWED.check(None)
    assert not OriginPolicy(["https://a.com"], allow_missing=False).check(None)
    assert not OriginPolicy(allow_missing=False).check(None)


def test_null_only_when_listed() -> None:
    assert OriginPolicy(["null"]).check("null")
    assert not OriginPolicy(["null"]).check("https://a.com")


def test_without_an_allowlist_every_origin_is_allowed() -> None:
    policy = OriginPolicy()
    assert policy.allowed is None
    for origin in ("https://evil.example", "null", "garbage", None):
        assert policy.check(origin)


def test_an_empty_allowlist_refuses_every_browser() -> None:
    policy = OriginPolicy([])
    assert not policy.check("https://a.com")
    assert policy.check(None)


@pytest.mark.parametrize(
    "entry", ["https://a.com/", "*", "https://*.a.com", "a.com", "https://a.com:70000", ""]
)
def test_configuration_typos_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        OriginPolicy([entry])


def test_a_single_string_is_not_an_allowlist() -> None:
    with pytest.raises(TypeError, match="not a string"):
        OriginPolicy("https://a.com")


def test_configured_default_ports_are_normalised_too() -> None:
    policy = OriginPolicy(["HTTPS://A.com:443", "http://b.com:80"])
    assert policy.allowed == frozenset({"https://a.com", "http://b.com"})
    assert policy.check("https://a.com")
    assert policy.check("http://b.com:80")


def test_check_headers() -> None:
    assert ALLOWED.check_headers([("host", "a.com"), ("origin", "https://a.com")])
    assert not ALLOWED.check_headers([("origin", "https://evil.com")])
    assert ALLOWED.check_headers([("host", "a.com")])
    duplicated = [("origin", "https://a.com"), ("origin", "https://a.com")]
    assert not ALLOWED.check_headers(duplicated)
    assert OriginPolicy().check_headers(duplicated)


def test_check_headers_on_a_real_handshake() -> None:
    server, client = ServerConnection(SecureMCP("origin-test")), ClientConnection()
    client.connect("a.com", "/", extra_headers=[("Origin", "https://evil-a.com")])
    server.receive_data(client.data_to_send())
    (request,) = server.events_received()
    assert isinstance(request, HandshakeRequest)
    assert not ALLOWED.check_headers(request.headers)
    assert OriginPolicy(["https://evil-a.com"]).check_headers(request.headers)


@given(st.text(max_size=40))
def test_only_exact_matches_pass(origin: str) -> None:
    policy = OriginPolicy(["https://a.com"])
    if policy.check(origin):
        scheme, _, rest = origin.partition("://")
        host = re.sub(r":0*443$", "", rest)
        assert (scheme.lower(), host.lower()) == ("https", "a.com")
