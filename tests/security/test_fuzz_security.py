"""Hypothesis fuzzing of the security layer: only documented outcomes, never a stray exception.

Handshakes: arbitrary Authorization, Origin and subprotocol values, and
arbitrary extra headers, through the core (which may answer 400 or 431 itself)
then the server's policy and caps: the only outcomes are 101, 400, 401, 403,
429 and 431, and the only exception is :class:`HandshakeRefused`. Tool calls:
arbitrary sequences of calls by a principal with arbitrary scopes: a call runs
exactly when the principal holds the tool's scopes, and every refusal carries
a documented code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securemcp import OriginPolicy, Principal, SecureMCP, SecurityPolicy, StaticTokenAuthenticator
from securemcp.auth import check_scopes
from securemcp.backends._security import ConnectionGuard
from securemcp.protocol import HandshakeRequest, Limits, ServerConnection, ToolCall
from securemcp.security import HandshakeAccepted, HandshakeRefused

from ..helpers import UPGRADE_REQUEST, parse_server_messages, text_frame

T = TypeVar("T")

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = {
    "tok-admin-0123456789": Principal("alice", frozenset({"admin", "read"})),
    "tok-reader-987654321": Principal("bob", frozenset({"read"})),
}
LIMITS = Limits(max_handshake_size=2048, max_header_count=12, permessage_deflate=True)

header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)
authorization = st.one_of(
    st.none(),
    st.sampled_from([f"Bearer {token}" for token in TOKENS]),
    st.builds("Bearer {}".format, header_text),
    header_text,
)
origin = st.one_of(
    st.none(),
    st.sampled_from(["https://app.example", "https://APP.example:443", "null", ""]),
    header_text,
)
subprotocols = st.lists(
    st.one_of(
        st.sampled_from(["mcp", "chat", *(f"bearer.{token}" for token in TOKENS)]),
        st.builds("bearer.{}".format, header_text),
        header_text,
    ),
    max_size=4,
)
extra_headers = st.lists(
    st.tuples(
        st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
        header_text,
    ),
    max_size=14,
)


def policy(allow_anonymous: bool, require_origin: bool) -> SecurityPolicy:
    return SecurityPolicy(
        authenticator=StaticTokenAuthenticator(TOKENS),
        allow_anonymous=allow_anonymous,
        origins=OriginPolicy(["https://app.example"], allow_missing=not require_origin),
        max_connections_per_principal=1,
    )


def request_bytes(
    auth: str | None, origin_value: str | None, protocols: list[str], extra: list[tuple[str, str]]
) -> bytes:
    headers = list(extra)
    if auth is not None:
        headers.append(("Authorization", auth))
    if origin_value is not None:
        headers.append(("Origin", origin_value))
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    headers.append(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"))
    text = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return UPGRADE_REQUEST[:-2] + text.encode("latin-1") + b"\r\n"


def refused_or(decide: Callable[[], T]) -> T | HandshakeRefused:
    """What ``decide()`` returns, or the :class:`HandshakeRefused` it raises (nothing else)."""
    try:
        return decide()
    except HandshakeRefused as refusal:
        return refusal


def status_of(output: bytes) -> int:
    assert output.startswith(b"HTTP/1.1 "), output[:40]
    return int(output[9:12])


@FUZZ
@given(
    authorization,
    origin,
    subprotocols,
    extra_headers,
    st.booleans(),
    st.booleans(),
    st.integers(min_value=1, max_value=2),
)
def test_handshakes_end_in_documented_statuses_only(
    auth: str | None,
    origin_value: str | None,
    protocols: list[str],
    extra: list[tuple[str, str]],
    allow_anonymous: bool,
    require_origin: bool,
    attempts: int,
) -> None:
    guard = ConnectionGuard(policy(allow_anonymous, require_origin))
    data = request_bytes(auth, origin_value, protocols, extra)
    for _ in range(attempts):  # a second identical attempt may meet the per-principal cap
        server = ServerConnection(SecureMCP("fuzz"), limits=LIMITS)
        server.receive_data(data)
        events = server.events_received()
        if not events:
            assert status_of(server.data_to_send()) in {400, 431}
            continue
        [request] = events
        assert isinstance(request, HandshakeRequest)
        admission = refused_or(functools.partial(guard.admit, request, "127.0.0.1", now=1_000.0))
        if isinstance(admission, HandshakeRefused):
            assert admission.status in {401, 403, 429}
            server.reject(admission.status, admission.reason, admission.headers)
            assert status_of(server.data_to_send()) == admission.status
            continue
        # Token entries never reach the subprotocols a server may choose from.
        assert not any(name.startswith("bearer.") for name in admission.subprotocols)
        chosen = "mcp" if "mcp" in admission.subprotocols else None
        server.accept(chosen, principal=admission.principal)
        assert status_of(server.data_to_send()) == 101


@FUZZ
@given(authorization, origin, subprotocols, st.booleans(), st.booleans())
def test_policy_check_raises_only_handshake_refused(
    auth: str | None,
    origin_value: str | None,
    protocols: list[str],
    allow_anonymous: bool,
    require_origin: bool,
) -> None:
    headers: list[tuple[str, str]] = []
    if auth is not None:
        headers.append(("authorization", auth))
    if origin_value is not None:
        headers.append(("origin", origin_value))
    request = HandshakeRequest("/", "localhost", tuple(headers), tuple(protocols), ())
    checked = policy(allow_anonymous, require_origin)
    accepted = refused_or(lambda: checked.check_handshake(request, now=1_000.0))
    if isinstance(accepted, HandshakeRefused):
        assert accepted.status in {401, 403}
        assert all(token not in accepted.reason for token in TOKENS)
        return
    assert isinstance(accepted, HandshakeAccepted)
    if accepted.principal is not None:
        assert accepted.principal in TOKENS.values()
    else:
        assert allow_anonymous


# Tool calls under scopes

SCOPES = ["admin", "read", "write"]
REFUSAL_CODES = {-31001, -31003, -32601, -32602}


def scoped_app() -> SecureMCP:
    app = SecureMCP("scoped")

    @app.tool()
    def public(n: int = 0) -> int:
        return n

    @app.tool(scopes={"read"})
    def read(n: int = 0) -> int:
        return n

    @app.tool(scopes={"admin"})
    def admin(n: int = 0) -> int:
        return n

    @app.tool(scopes={"admin", "write"})
    def admin_write(n: int = 0) -> int:
        return n

    return app


APP = scoped_app()

calls = st.lists(
    st.tuples(
        st.sampled_from(["public", "read", "admin", "admin_write", "missing"]),
        st.one_of(st.just({}), st.fixed_dictionaries({"n": st.integers()}), st.just({"n": "x"})),
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(
    st.one_of(
        st.none(),
        st.builds(
            lambda scopes: Principal("fuzzer", frozenset(scopes)),
            st.sets(st.sampled_from(SCOPES)),
        ),
    ),
    calls,
)
def test_tool_calls_run_exactly_when_the_scopes_allow(
    principal: Principal | None, sequence: list[tuple[str, dict[str, Any]]]
) -> None:
    server = ServerConnection(APP)
    server.receive_data(UPGRADE_REQUEST)
    server.events_received()
    server.accept(principal=principal, welcome=False)
    server.data_to_send()
    for index, (name, arguments) in enumerate(sequence):
        server.receive_data(
            text_frame(
                {
                    "id": index,
                    "method": "invoke_tool",
                    "params": {"tool_name": name, "params": arguments},
                }
            )
        )
        events = server.events_received()
        answers = parse_server_messages(server.data_to_send())
        tool = APP.get_tool(name)
        allowed = tool is not None and check_scopes(principal, tool.scopes)
        valid = not isinstance(arguments.get("n", 0), str)
        if allowed and valid:
            [call] = events
            assert isinstance(call, ToolCall)
            assert answers == []
            server.complete(call, call.tool.fn(**call.arguments))
            [answer] = parse_server_messages(server.data_to_send())
            assert answer == {"id": index, "result": arguments.get("n", 0)}
            continue
        assert events == []
        [answer] = answers
        code = answer["error"]["code"]
        assert code in REFUSAL_CODES
        if tool is None:
            assert code == -32601
        elif not allowed:
            # Scopes are checked before the arguments: a refusal says nothing about them.
            assert code == (-31001 if principal is None else -31003)
            assert json.dumps(answer).find('"n"') < 0
        else:
            assert code == -32602
