"""Authentication and authorization building blocks: tokens, JWTs, scopes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from securemcp import Forbidden, SecureMCP, Unauthenticated
from securemcp.auth import (
    SUBPROTOCOL_TOKEN_PREFIX,
    AuthenticationError,
    Authenticator,
    JWTAuthenticator,
    Principal,
    StaticTokenAuthenticator,
    authenticate_handshake,
    authorize,
    check_scopes,
    extract_token,
)
from securemcp.protocol import ClientConnection, HandshakeRequest, ServerConnection

_T = TypeVar("_T")

NOW = 1_700_000_000.0
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"  # 35 bytes: long enough for HS256


# Principal


def test_principal_normalises_scopes_and_freezes_claims() -> None:
    principal = Principal("alice", {"read", "write"}, claims={"team": "blue"})
    assert principal.scopes == frozenset({"read", "write"})
    assert isinstance(principal.scopes, frozenset)
    assert principal.claims["team"] == "blue"
    with pytest.raises(TypeError):
        principal.claims["team"] = "red"  # type: ignore[index]
    assert hash(principal) == hash(Principal("alice", frozenset({"read", "write"})))
    assert principal == Principal("alice", frozenset({"read", "write"}), claims={"team": "blue"})


def test_principal_refuses_bad_fields() -> None:
    with pytest.raises(ValueError, match="subject"):
        Principal("")
    with pytest.raises(TypeError, match="not a string"):
        Principal("alice", "admin")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="only strings"):
        Principal("alice", frozenset({1}))  # type: ignore[arg-type]


def test_principal_scopes_and_expiry() -> None:
    principal = Principal("alice", frozenset({"read", "admin"}), expires_at=NOW)
    assert principal.has_scopes({"read"})
    assert principal.has_scopes(["read", "admin"])
    assert principal.has_scopes("admin")  # one scope, not the letters a, d, m, i, n
    assert principal.has_scopes(())
    assert not principal.has_scopes({"read", "delete"})
    assert not principal.is_expired(NOW - 0.001)
    assert principal.is_expired(NOW)
    assert not Principal("bob").is_expired(1e18)


def test_authentication_error_challenge() -> None:
    bad = AuthenticationError("unknown token")
    assert bad.status_code == 401
    assert bad.reason == "unknown token"
    assert bad.www_authenticate() == 'Bearer realm="securemcp", error="invalid_token"'
    missing = AuthenticationError("missing credentials", error=None)
    assert missing.www_authenticate('my "app"') == 'Bearer realm="my \\"app\\""'


# Static tokens


def _fingerprint(token: str) -> str:
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def test_static_tokens_map_to_principals() -> None:
    admin = Principal("admin-user", frozenset({"admin"}))
    auth = StaticTokenAuthenticator({"tok-admin-0001": admin, "tok-reader-002": {"read"}})
    assert isinstance(auth, Authenticator)
    assert auth.authenticate("tok-admin-0001", now=NOW) is admin
    reader = auth.authenticate("tok-reader-002", now=NOW)
    assert reader.subject == _fingerprint("tok-reader-002")
    assert reader.scopes == frozenset({"read"})
    assert "tok-reader" not in reader.subject


@pytest.mark.parametrize(
    "presented",
    ["tok-admin-0002", "tok-admin-000", "tok-admin-00011", "", "TOK-ADMIN-0001", "tok admin"],
)
def test_static_tokens_refuse_wrong_tokens(presented: str) -> None:
    auth = StaticTokenAuthenticator({"tok-admin-0001": {"admin"}})
    with pytest.raises(AuthenticationError) as info:
        auth.authenticate(presented, now=NOW)
    assert info.value.reason == "unknown token"
    assert info.value.error == "invalid_token"


def test_static_tokens_compare_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    # No early exit: a match on the first entry costs as many comparisons as a miss.
    auth = StaticTokenAuthenticator({"first": {"a"}, "second": {"b"}, "third": {"c"}})
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    auth.authenticate("first", now=NOW)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(AuthenticationError):
        auth.authenticate("nope", now=NOW)
    assert len(calls) == 3
    # Only fixed-size digests are compared, never the raw token.
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_static_tokens_honour_principal_expiry() -> None:
    auth = StaticTokenAuthenticator({"temp-key": Principal("temp", expires_at=NOW + 60)})
    assert auth.authenticate("temp-key", now=NOW + 59).subject == "temp"
    with pytest.raises(AuthenticationError, match="expired"):
        auth.authenticate("temp-key", now=NOW + 60)


@pytest.mark.parametrize("token", ["", "has space", "semi;colon", "é-accent"])
def test_static_tokens_refuse_unusable_tokens_at_construction(token: str) -> None:
    with pytest.raises(ValueError, match="b64token"):
        StaticTokenAuthenticator({token: {"read"}})


def test_static_tokens_refuse_a_string_of_scopes() -> None:
    with pytest.raises(TypeError, match="not a string"):
        StaticTokenAuthenticator({"key-1": "admin"})


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


def _outcome(fn: Callable[[], _T]) -> _T | AuthenticationError:
    try:
        return fn()
    except AuthenticationError as exc:
        return exc


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


# Finding the token


def test_extract_token_from_the_authorization_header() -> None:
    headers = [("host", "x"), ("authorization", "Bearer abc.DEF-123_~+/==")]
    assert extract_token(headers, ["mcp"]) == ("abc.DEF-123_~+/==", ("mcp",))
    assert extract_token([("authorization", "bearer  tok")], []) == ("tok", ())
    assert extract_token([("authorization", "BEARER tok")], []) == ("tok", ())


def test_extract_token_from_the_subprotocol_list() -> None:
    protocols = ["mcp", f"{SUBPROTOCOL_TOKEN_PREFIX}eyJ.abc.def", "other"]
    assert extract_token([], protocols) == ("eyJ.abc.def", ("mcp", "other"))


def test_extract_token_without_any() -> None:
    assert extract_token([("cookie", "a=b")], ["mcp"]) == (None, ("mcp",))


@pytest.mark.parametrize(
    ("headers", "protocols", "reason"),
    [
        ([("authorization", "Bearer a")], ["bearer.b"], "more than one token"),
        ([], ["bearer.a", "bearer.b"], "more than one token"),
        ([("authorization", "Bearer a"), ("authorization", "Bearer a")], [], "Authorization"),
        ([("authorization", "Bearer")], [], "malformed"),
        ([("authorization", "Bearer a b")], [], "malformed"),
        ([("authorization", "Basic dXNlcjpwYXNz")], [], "malformed"),
        ([("authorization", "Bearer a,b")], [], "malformed"),
        ([("authorization", "")], [], "malformed"),
        ([], ["bearer."], "malformed subprotocol"),
    ],
)
def test_extract_token_refuses_ambiguous_or_malformed_credentials(
    headers: list[tuple[str, str]], protocols: list[str], reason: str
) -> None:
    with pytest.raises(AuthenticationError, match=reason) as info:
        extract_token(headers, protocols)
    assert info.value.error == "invalid_request"


_header_names = st.sampled_from(["authorization", "origin", "host", "cookie"])


@given(
    headers=st.lists(st.tuples(_header_names, st.text(max_size=30)), max_size=4),
    protocols=st.lists(
        st.text(max_size=20) | st.text(max_size=20).map(lambda text: "bearer." + text),
        max_size=4,
    ),
)
def test_extract_token_outcomes(headers: list[tuple[str, str]], protocols: list[str]) -> None:
    outcome = _outcome(lambda: extract_token(headers, protocols))
    if isinstance(outcome, AuthenticationError):
        assert outcome.error == "invalid_request"
    else:
        token, remaining = outcome
        assert not any(entry.startswith("bearer.") for entry in remaining)
        assert [entry for entry in protocols if entry in remaining] == list(remaining)
        if token is not None:
            assert f"bearer.{token}" in protocols or any(
                value.split()[-1] == token for _, value in headers
            )


def _handshake(
    subprotocols: list[str], headers: list[tuple[str, str]]
) -> tuple[ServerConnection, ClientConnection, HandshakeRequest]:
    server, client = ServerConnection(SecureMCP("auth-test")), ClientConnection()
    client.connect("localhost", "/?token=ignored", subprotocols=subprotocols, extra_headers=headers)
    server.receive_data(client.data_to_send())
    (request,) = server.events_received()
    assert isinstance(request, HandshakeRequest)
    return server, client, request


def test_a_browser_token_is_never_echoed_by_the_real_server() -> None:
    server, client, request = _handshake(["mcp", "bearer.tok-1234"], [])
    token, protocols = extract_token(request.headers, request.subprotocols)
    assert (token, protocols) == ("tok-1234", ("mcp",))
    server.accept(subprotocol=protocols[0])
    reply = server.data_to_send()
    assert b"tok-1234" not in reply
    client.receive_data(reply)
    assert client.subprotocol == "mcp"


def test_authenticate_handshake_with_the_real_core() -> None:
    auth = StaticTokenAuthenticator({"tok-1234": {"read"}})
    _, _, request = _handshake([], [("Authorization", "Bearer tok-1234")])
    principal, protocols = authenticate_handshake(
        auth, request.headers, request.subprotocols, now=NOW
    )
    assert principal is not None
    assert principal.scopes == {"read"}
    assert protocols == ()
    # The query string is not a place for tokens.
    _, _, request = _handshake([], [])
    with pytest.raises(AuthenticationError, match="missing"):
        authenticate_handshake(auth, request.headers, request.subprotocols, now=NOW)


def test_authenticate_handshake_cases() -> None:
    auth = StaticTokenAuthenticator({"good-token": {"read"}})
    bearer = [("authorization", "Bearer good-token")]
    # No authenticator: anonymous, token entries still stripped.
    assert authenticate_handshake(None, [], ["mcp", "bearer.x"], now=NOW) == (None, ("mcp",))
    with pytest.raises(AuthenticationError) as info:
        authenticate_handshake(auth, [], ["mcp"], now=NOW)
    assert info.value.error is None
    assert info.value.www_authenticate() == 'Bearer realm="securemcp"'
    assert authenticate_handshake(auth, [], ["mcp"], now=NOW, required=False) == (None, ("mcp",))
    principal, _ = authenticate_handshake(auth, bearer, [], now=NOW, required=False)
    assert principal is not None
    with pytest.raises(AuthenticationError, match="unknown token"):
        authenticate_handshake(
            auth, [("authorization", "Bearer bad-token")], [], now=NOW, required=False
        )


# Authorization


def test_check_scopes_and_authorize() -> None:
    reader = Principal("r", frozenset({"read"}))
    assert check_scopes(None, frozenset())
    assert check_scopes(reader, {"read"})
    assert check_scopes(reader, "read")
    assert not check_scopes(reader, {"admin"})
    assert not check_scopes(None, {"read"})
    authorize(None, ())
    authorize(reader, ["read"])
    with pytest.raises(Unauthenticated) as unauthenticated:
        authorize(None, {"read"})
    assert unauthenticated.value.code == -31001
    with pytest.raises(Forbidden) as forbidden:
        authorize(reader, {"admin", "read"})
    assert forbidden.value.code == -31003
    assert forbidden.value.data == {"required_scopes": ["admin", "read"]}
