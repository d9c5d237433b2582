""":class:`JWTAuthenticator`: signatures, algorithms, claims and dates, keys and options.

HS256 and RS256, the audience, issuer, expiry (with leeway), not-before and
issued-at claims against a given clock, forged and ``alg: none`` tokens, an
HS256 token signed with the RS256 public key, dangerous algorithm lists and
weak keys; and no authenticator ever raising anything but
:class:`AuthenticationError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from securemcp.auth import (
    AuthenticationError,
    Authenticator,
    JWTAuthenticator,
    Principal,
    StaticTokenAuthenticator,
)

from .auth_helpers import NOW, _outcome

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"  # 35 bytes: long enough for HS256

# JWT


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "alice", "exp": int(NOW) + 3600, "scope": "read write"}
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _hs256(**overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), SECRET, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _refusal(auth: JWTAuthenticator, token: str, now: float = NOW) -> str:
    with pytest.raises(AuthenticationError) as info:
        auth.authenticate(token, now=now)
    assert token not in str(info.value)
    return info.value.reason


def test_jwt_hs256_gives_the_principal() -> None:
    auth = JWTAuthenticator(SECRET)
    assert isinstance(auth, Authenticator)
    principal = auth.authenticate(_hs256(team="blue"), now=NOW)
    assert principal.subject == "alice"
    assert principal.scopes == frozenset({"read", "write"})
    assert principal.expires_at == NOW + 3600
    assert principal.claims["team"] == "blue"


def test_jwt_scopes_from_a_list_claim_or_a_custom_claim() -> None:
    auth = JWTAuthenticator(SECRET)
    assert auth.authenticate(_hs256(scope=["a", "b"]), now=NOW).scopes == {"a", "b"}
    assert auth.authenticate(_hs256(scope=None), now=NOW).scopes == frozenset()
    custom = JWTAuthenticator(SECRET, scope_claim="scp", subject_claim="uid")
    principal = custom.authenticate(_hs256(scp=["admin"], uid="u-42"), now=NOW)
    assert (principal.subject, principal.scopes) == ("u-42", frozenset({"admin"}))


@pytest.mark.parametrize("scope", [42, ["a", 1], {"a": True}])
def test_jwt_refuses_malformed_scope_claims(scope: Any) -> None:
    assert _refusal(JWTAuthenticator(SECRET), _hs256(scope=scope)) == "malformed claim: scope"


def test_jwt_refuses_a_wrong_signature() -> None:
    token = jwt.encode(_claims(), "another-secret-another-secret-12345", algorithm="HS256")
    assert _refusal(JWTAuthenticator(SECRET), token) == "invalid signature"


def test_jwt_checks_the_audience() -> None:
    token = _hs256(aud="mcp-server")
    assert JWTAuthenticator(SECRET, audience="mcp-server").authenticate(token, now=NOW)
    assert JWTAuthenticator(SECRET, audience=["other", "mcp-server"]).authenticate(token, now=NOW)
    assert _refusal(JWTAuthenticator(SECRET, audience="other"), token) == "invalid audience"
    # A token meant for some audience is not for a server that names none.
    assert _refusal(JWTAuthenticator(SECRET), token) == "invalid audience"
    assert (
        _refusal(JWTAuthenticator(SECRET, audience="mcp-server"), _hs256()) == "missing claim: aud"
    )


def test_jwt_checks_the_issuer() -> None:
    auth = JWTAuthenticator(SECRET, issuer="https://issuer.example")
    assert auth.authenticate(_hs256(iss="https://issuer.example"), now=NOW)
    assert _refusal(auth, _hs256(iss="https://evil.example")) == "invalid issuer"
    assert _refusal(auth, _hs256()) == "missing claim: iss"


def test_jwt_expiry_is_checked_against_the_given_now() -> None:
    exp = int(NOW) + 10
    token = _hs256(exp=exp)
    auth = JWTAuthenticator(SECRET)
    assert auth.authenticate(token, now=exp - 0.5).expires_at == exp
    assert _refusal(auth, token, now=exp) == "expired token"
    assert _refusal(auth, token, now=exp + 1000) == "expired token"


def test_jwt_leeway_extends_expiry_and_the_principal_expiry() -> None:
    exp = int(NOW) - 5
    lenient = JWTAuthenticator(SECRET, leeway=10)
    assert lenient.authenticate(_hs256(exp=exp), now=NOW).expires_at == exp + 10
    assert _refusal(JWTAuthenticator(SECRET, leeway=2), _hs256(exp=exp)) == "expired token"


def test_jwt_not_before_and_issued_at_in_the_future_are_refused() -> None:
    auth = JWTAuthenticator(SECRET)
    assert _refusal(auth, _hs256(nbf=int(NOW) + 60)) == "token not yet valid"
    assert _refusal(auth, _hs256(iat=int(NOW) + 60)) == "token issued in the future"
    assert auth.authenticate(_hs256(nbf=int(NOW), iat=int(NOW)), now=NOW)
    lenient = JWTAuthenticator(SECRET, leeway=120)
    assert lenient.authenticate(_hs256(nbf=int(NOW) + 60, iat=int(NOW) + 60), now=NOW)


def test_jwt_requires_exp_unless_told_otherwise() -> None:
    token = _hs256(exp=None)
    assert _refusal(JWTAuthenticator(SECRET), token) == "missing claim: exp"
    assert JWTAuthenticator(SECRET, require=()).authenticate(token, now=NOW).expires_at is None


@pytest.mark.parametrize("exp", ["soon", True, [1], 10**400, 1e400])
def test_jwt_refuses_malformed_dates(exp: Any) -> None:
    assert _refusal(JWTAuthenticator(SECRET), _hs256(exp=exp)) == "malformed claim: exp"


@pytest.mark.parametrize(("sub", "reason"), [(None, "missing"), ("", "missing"), (7, "invalid")])
def test_jwt_needs_a_string_subject(sub: Any, reason: str) -> None:
    assert _refusal(JWTAuthenticator(SECRET), _hs256(sub=sub)).startswith(reason)


def test_a_nan_clock_fails_closed() -> None:
    nan = float("nan")
    assert Principal("p", expires_at=NOW).is_expired(nan)
    assert _refusal(JWTAuthenticator(SECRET), _hs256(), now=nan) == "expired token"
    lenient = JWTAuthenticator(SECRET, require=())
    assert _refusal(lenient, _hs256(exp=None, nbf=int(NOW)), now=nan) == "token not yet valid"


def test_jwt_refuses_garbage() -> None:
    assert _refusal(JWTAuthenticator(SECRET), "not-a-jwt") == "malformed token"


def test_jwt_refuses_alg_none() -> None:
    unsigned = _forge({"alg": "none", "typ": "JWT"}, _claims(), lambda _: b"")
    assert _refusal(JWTAuthenticator(SECRET), unsigned) == "algorithm not allowed"


def test_jwt_rs256(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    for key in (_public_pem(rsa_key), rsa_key.public_key(), rsa_key):
        auth = JWTAuthenticator(key, algorithms=["RS256"])
        assert auth.authenticate(token, now=NOW).subject == "alice"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(_claims(), other, algorithm="RS256")
    auth = JWTAuthenticator(_public_pem(rsa_key), algorithms=["RS256"])
    assert _refusal(auth, forged) == "invalid signature"


def test_jwt_refuses_an_hs256_token_signed_with_the_rs256_public_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret.
    pem = _public_pem(rsa_key)
    confused = _forge(
        {"alg": "HS256", "typ": "JWT"},
        _claims(),
        lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )
    auth = JWTAuthenticator(pem, algorithms=["RS256"])
    assert _refusal(auth, confused) == "algorithm not allowed"
    # Nor can the public key be configured as an HMAC secret.
    with pytest.raises(ValueError, match="not usable with HS256"):
        JWTAuthenticator(pem, algorithms=["HS256"])


@pytest.mark.parametrize(
    ("algorithms", "message"),
    [
        ([], "at least one"),
        (["none"], "never allowed"),
        (["HS256", "None"], "never allowed"),
        (["HS256", "RS256"], "cannot be mixed"),
        (["XX256"], "unsupported"),
    ],
)
def test_jwt_refuses_dangerous_algorithm_lists(algorithms: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JWTAuthenticator(SECRET, algorithms=algorithms)


def test_jwt_refuses_weak_or_unusable_keys() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JWTAuthenticator("short-secret")
    with pytest.raises(ValueError, match="at least 64 bytes"):
        JWTAuthenticator(SECRET, algorithms=["HS512"])
    with pytest.raises(ValueError, match="not usable with RS256"):
        JWTAuthenticator("not a pem key", algorithms=["RS256"])
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        JWTAuthenticator(weak_rsa.public_key(), algorithms=["RS256"])


def test_jwt_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="leeway"):
        JWTAuthenticator(SECRET, leeway=-1)
    with pytest.raises(ValueError, match="audience"):
        JWTAuthenticator(SECRET, audience=[])
    # A lone algorithm name is accepted as one algorithm, not as letters.
    assert JWTAuthenticator(SECRET, algorithms="HS256").authenticate(_hs256(), now=NOW)


def test_jwt_without_pyjwt_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(ImportError, match=r"securemcp\[jwt\]"):
        JWTAuthenticator(SECRET)


_REASONS = {
    "unknown token",
    "expired token",
    "invalid signature",
    "algorithm not allowed",
    "invalid audience",
    "invalid issuer",
    "malformed token",
    "invalid token",
    "token not yet valid",
    "token issued in the future",
}
_CLAIM_REASONS = ("missing claim: ", "malformed claim: ", "missing or malformed claim: ")


@settings(max_examples=200)
@given(token=st.text(max_size=200) | st.builds(_hs256, sub=st.text(), scope=st.text()))
def test_authenticators_only_ever_raise_authentication_error(token: str) -> None:
    for auth in (JWTAuthenticator(SECRET), StaticTokenAuthenticator({"key-1": {"a"}})):
        outcome = _outcome(lambda: auth.authenticate(token, now=NOW))  # noqa: B023
        if isinstance(outcome, AuthenticationError):
            # Fixed phrases only, so a reason can never echo the token.
            assert outcome.reason in _REASONS or outcome.reason.startswith(_CLAIM_REASONS)
        else:
            assert outcome.subject
