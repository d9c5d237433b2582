"""Authentication and authorization building blocks: principals, static tokens, scopes.

:class:`Principal`, :class:`StaticTokenAuthenticator`, finding the token in a
handshake (header or subprotocol) and authenticating it with the real core,
and scope checks. JWTs are in ``test_auth_jwt.py``.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securemcp import Forbidden, SecureMCP, Unauthenticated
from securemcp.auth import (
    SUBPROTOCOL_TOKEN_PREFIX,
    AuthenticationError,
    Authenticator,
    Principal,
    StaticTokenAuthenticator,
    authenticate_handshake,
    authorize,
    check_scopes,
    extract_token,
)
from securemcp.protocol import ClientConnection, HandshakeRequest, ServerConnection

from .auth_helpers import NOW, _outcome

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
