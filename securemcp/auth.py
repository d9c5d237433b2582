"""Authentication at the handshake and per-tool authorization, without I/O.

Everything here is pure: no clock reads (the caller passes ``now``, POSIX
seconds), no sockets. A server wires it in like this::

    try:
        principal, subprotocols = authenticate_handshake(
            authenticator, request.headers, request.subprotocols, now=time.time()
        )
    except AuthenticationError as exc:
        conn.reject(401, extra_headers=[("www-authenticate", exc.www_authenticate())])
    else:
        conn.accept(subprotocol="mcp" if "mcp" in subprotocols else None)

and, before validating each tool call, ``authorize(principal, tool.scopes)``,
which raises :class:`~securemcp.errors.Unauthenticated` (-31001) or
:class:`~securemcp.errors.Forbidden` (-31003). A connection whose principal
:meth:`~Principal.is_expired` must be closed with 1008.

Where a token may come from (see :func:`extract_token`): the
``Authorization: Bearer <token>`` header, or, for browsers (whose WebSocket API
cannot set headers), one entry ``bearer.<token>`` of the subprotocol list,
sent next to the real subprotocol: ``new WebSocket(url, ["mcp", "bearer." +
token])``. The server answers with the real subprotocol only, never the token
(a browser fails the connection unless the server picks one of its entries, so
it must send a real one too). Never from the query string: URLs end up in logs.

Anonymous connections are represented by ``None`` wherever a
:class:`Principal` would go.

This module holds the handshake's and the tools' checks; :class:`Principal`
and the static tokens are :mod:`._tokens`', JWTs :mod:`._jwt`'s, all importable
from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._jwt import JWTAuthenticator
from ._tokens import (
    B64TOKEN,
    AuthenticationError,
    Authenticator,
    Principal,
    StaticTokenAuthenticator,
)
from .errors import Forbidden, Unauthenticated

__all__ = [
    "SUBPROTOCOL_TOKEN_PREFIX",
    "AuthenticationError",
    "Authenticator",
    "JWTAuthenticator",
    "Principal",
    "StaticTokenAuthenticator",
    "authenticate_handshake",
    "authorize",
    "check_scopes",
    "extract_token",
]

SUBPROTOCOL_TOKEN_PREFIX = "bearer."
"""A subprotocol entry ``bearer.<token>`` carries a token (the browser form)."""


def extract_token(
    headers: Iterable[tuple[str, str]], subprotocols: Sequence[str]
) -> tuple[str | None, tuple[str, ...]]:
    """Find the bearer token of a handshake; never looks at the query string.

    ``headers`` are (lower-case name, value) pairs, as
    :attr:`securemcp.protocol.HandshakeRequest.headers` gives them. The token
    comes from ``Authorization: Bearer <token>`` (scheme case-insensitive), or
    from the single subprotocol entry ``bearer.<token>``.

    Returns ``(token or None, the subprotocols without token entries)``: pick
    the subprotocol to answer from the second item, so the token is never
    echoed. Raises :class:`AuthenticationError` (``invalid_request``) for
    ambiguous or malformed credentials: more than one ``Authorization`` header,
    a scheme other than Bearer, a malformed token, or more than one token
    (header and subprotocol, or two subprotocol entries).
    """
    authorizations = [value for name, value in headers if name == "authorization"]
    if len(authorizations) > 1:
        raise AuthenticationError("more than one Authorization header", error="invalid_request")
    tokens: list[str] = []
    if authorizations:
        parts = authorizations[0].split()
        if len(parts) != 2 or parts[0].lower() != "bearer" or not B64TOKEN.fullmatch(parts[1]):
            raise AuthenticationError(
                "malformed Authorization header (expected: Bearer <token>)",
                error="invalid_request",
            )
        tokens.append(parts[1])
    remaining: list[str] = []
    for entry in subprotocols:
        if entry.startswith(SUBPROTOCOL_TOKEN_PREFIX):
            token = entry[len(SUBPROTOCOL_TOKEN_PREFIX) :]
            if not B64TOKEN.fullmatch(token):
                raise AuthenticationError("malformed subprotocol token", error="invalid_request")
            tokens.append(token)
        else:
            remaining.append(entry)
    if len(tokens) > 1:
        raise AuthenticationError("more than one token presented", error="invalid_request")
    return (tokens[0] if tokens else None), tuple(remaining)


def authenticate_handshake(
    authenticator: Authenticator | None,
    headers: Iterable[tuple[str, str]],
    subprotocols: Sequence[str],
    *,
    now: float,
    required: bool = True,
) -> tuple[Principal | None, tuple[str, ...]]:
    """Authenticate a handshake: the principal (``None`` if anonymous) and the real subprotocols.

    Without an ``authenticator`` every connection is anonymous (token entries
    are still removed from the subprotocols). With one, a presented token must
    be valid; a missing token raises :class:`AuthenticationError` (``error``
    ``None``) when ``required``, else the connection is anonymous. Raise means:
    answer HTTP 401 with ``exc.www_authenticate()``.
    """
    token, remaining = extract_token(headers, subprotocols)
    if authenticator is None:
        return None, remaining
    if token is None:
        if required:
            raise AuthenticationError("missing credentials", error=None)
        return None, remaining
    return authenticator.authenticate(token, now=now), remaining


def check_scopes(principal: Principal | None, required: Iterable[str]) -> bool:
    """Whether ``principal`` holds every scope in ``required``; anonymous (None) holds none."""
    wanted = frozenset((required,)) if isinstance(required, str) else frozenset(required)
    if not wanted:
        return True
    return principal is not None and principal.has_scopes(wanted)


def authorize(principal: Principal | None, required: Iterable[str]) -> None:
    """Raise unless ``principal`` holds every scope in ``required``.

    An anonymous connection (``None``) gets :class:`~securemcp.errors.Unauthenticated`
    (-31001), an authenticated one without the scopes
    :class:`~securemcp.errors.Forbidden` (-31003), whose ``data`` lists the
    required scopes (never the principal's own).
    """
    wanted = frozenset((required,)) if isinstance(required, str) else frozenset(required)
    if check_scopes(principal, wanted):
        return
    if principal is None:
        raise Unauthenticated("Authentication required")
    raise Forbidden("Insufficient scope", data={"required_scopes": sorted(wanted)})
