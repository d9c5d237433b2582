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
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, runtime_checkable

from .errors import Forbidden, SecureMCPError, Unauthenticated

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

# RFC 6750's b64token: what a Bearer credential may contain. A token meant to
# travel in the subprotocol list must also be an HTTP token (no "/" or "="), so
# base64url without padding (JWTs, ``secrets.token_urlsafe()``) works in both.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _scope_set(scopes: Iterable[str], what: str) -> frozenset[str]:
    # A bare string is an iterable of one-letter "scopes": almost surely a mistake.
    if isinstance(scopes, str):
        raise TypeError(f"{what} must be a collection of scope names, not a string")
    result = frozenset(scopes)
    if not all(isinstance(scope, str) for scope in result):
        raise TypeError(f"{what} must contain only strings")
    return result


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection acts for, as established at the handshake.

    Immutable and safe to share between connections; ``claims`` is a read-only
    view (the verified JWT payload, or empty).
    """

    subject: str
    """A stable, non-secret identifier: a user id, or ``key-<fingerprint>`` for an API key."""
    scopes: frozenset[str] = frozenset()
    """What the principal may do; a tool's required scopes must all be here."""
    expires_at: float | None = None
    """POSIX seconds from which the credentials no longer count (``None``: never)."""
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), hash=False, compare=True
    )
    """Extra verified facts about the principal, read-only."""

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError("Principal.subject must be a non-empty string")
        # Accept any collection but store exactly what the annotations promise.
        object.__setattr__(self, "scopes", _scope_set(self.scopes, "Principal.scopes"))
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Whether every scope in ``required`` is granted (a single string is one scope)."""
        wanted = frozenset((required,)) if isinstance(required, str) else frozenset(required)
        return wanted <= self.scopes

    def is_expired(self, now: float) -> bool:
        """Whether the credentials no longer count at ``now`` (POSIX seconds)."""
        # Written to fail closed: a NaN `now` counts as expired.
        return self.expires_at is not None and not now < self.expires_at


class AuthenticationError(SecureMCPError):
    """Missing or bad credentials: refuse the upgrade with HTTP 401.

    ``reason`` is short and never contains the token, so it is safe to log and
    to send in the 401 body. ``error`` is the RFC 6750 error code for the
    ``WWW-Authenticate`` challenge: ``"invalid_token"`` (bad, expired, unknown),
    ``"invalid_request"`` (malformed: two tokens, a wrong scheme), or ``None``
    when no credentials were presented at all.
    """

    status_code: ClassVar[int] = 401

    def __init__(self, reason: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error

    def www_authenticate(self, realm: str = "securemcp") -> str:
        """The value of the ``WWW-Authenticate`` header for the 401 answer."""
        escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
        challenge = f'Bearer realm="{escaped}"'
        return challenge if self.error is None else f'{challenge}, error="{self.error}"'


@runtime_checkable
class Authenticator(Protocol):
    """Turns a presented token into a :class:`Principal`.

    Implementations are pure: ``now`` (POSIX seconds) is the only notion of
    time, and they must not block (the server calls them while handling the
    handshake). Any failure raises :class:`AuthenticationError`.
    """

    def authenticate(self, token: str, *, now: float) -> Principal:
        """Return the principal ``token`` stands for at ``now``, or raise AuthenticationError."""
        ...


def _digest(token: str) -> bytes:
    # surrogatepass: a str from anywhere hashes without raising.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class StaticTokenAuthenticator:
    """Fixed bearer tokens or API keys, each mapped to a principal.

    ``tokens`` maps each token either to a :class:`Principal` or to a
    collection of scopes; a collection makes a principal whose subject is the
    non-secret fingerprint ``key-<first 8 hex digits of the token's SHA-256>``.

    Only SHA-256 digests are kept. A presented token's digest is compared with
    every stored digest by :func:`hmac.compare_digest`, with no early exit, so
    the time taken reveals neither which token matched nor whether one did.
    The cost is one comparison per configured token, per handshake.
    """

    def __init__(self, tokens: Mapping[str, Principal | Iterable[str]]) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for token, value in tokens.items():
            if not isinstance(token, str) or not _B64TOKEN.fullmatch(token):
                # An empty or oddly shaped token could never arrive in a Bearer
                # header, and "" would make a missing token a valid one.
                raise ValueError(
                    "each token must be a non-empty string of letters, digits and -._~+/ "
                    "(RFC 6750 b64token)"
                )
            digest = _digest(token)
            if isinstance(value, Principal):
                principal = value
            else:
                scopes = _scope_set(value, "the scopes of a token")
                principal = Principal(f"key-{digest.hex()[:8]}", scopes)
            entries.append((digest, principal))
        self._entries = tuple(entries)

    def authenticate(self, token: str, *, now: float) -> Principal:
        """The principal of ``token``; AuthenticationError if unknown or expired."""
        presented = _digest(token)
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        if found is None:
            raise AuthenticationError("unknown token")
        if found.is_expired(now):
            raise AuthenticationError("expired token")
        return found


def _numeric_date(payload: Mapping[str, Any], claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    # RFC 7519 NumericDate: a JSON number (bool is an int in Python; not here).
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            number = float(value)  # an int past 1e308 raises OverflowError
        except OverflowError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise AuthenticationError(f"malformed claim: {claim}")


class JWTAuthenticator:
    """JSON Web Tokens verified with PyJWT (``pip install "securemcp[jwt]"``).

    ``key`` is the shared secret for HMAC algorithms (``HS256``…, at least as
    many bytes as the hash: 32 for HS256), or the public key for asymmetric
    ones (``RS256``, ``PS256``, ``ES256``, ``EdDSA``…) as PEM text/bytes or a
    ``cryptography`` key object (a private key is reduced to its public half).

    Checked on every token: the signature, with an algorithm from
    ``algorithms`` only; ``audience`` (the token's ``aud`` must name one of
    them; with ``audience=None`` a token that carries ``aud`` is refused);
    ``issuer``; the claims in ``require`` are present; ``exp`` and ``nbf``
    against the ``now`` passed in, allowing ``leeway`` seconds of clock skew;
    the subject (``subject_claim``) is a non-empty string. Scopes come from
    ``scope_claim``, a space-separated string (OAuth 2.0 style) or a list of
    strings. The principal's ``expires_at`` is ``exp + leeway`` — the same
    instant the handshake check uses — and ``claims`` is the verified payload.

    Algorithm confusion is refused when constructing: ``none`` is never
    allowed, and HMAC and asymmetric algorithms cannot be mixed (a public key
    must never double as an HMAC secret). Weak keys (short HMAC secrets, RSA
    under 2048 bits) are refused too.
    """

    def __init__(
        self,
        key: Any,
        *,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        scope_claim: str = "scope",
        subject_claim: str = "sub",
        leeway: float = 0.0,
        require: Sequence[str] = ("exp",),
    ) -> None:
        try:
            import jwt
        except ImportError as exc:
            raise ImportError('JWTAuthenticator needs PyJWT: pip install "securemcp[jwt]"') from exc
        if isinstance(algorithms, str):
            algorithms = (algorithms,)
        algorithms = tuple(algorithms)
        if not algorithms:
            raise ValueError("algorithms must name at least one algorithm")
        if any(alg.lower() == "none" for alg in algorithms):
            raise ValueError('the "none" algorithm is never allowed')
        symmetric = {alg.startswith("HS") for alg in algorithms}
        if len(symmetric) > 1:
            raise ValueError("HMAC (HS*) and asymmetric algorithms cannot be mixed")
        if not math.isfinite(leeway) or leeway < 0:
            raise ValueError("leeway must be a finite number of seconds >= 0")
        if audience is not None and not isinstance(audience, str):
            audience = list(audience)
            if not audience:
                raise ValueError("audience must name at least one audience, or be None")

        prepared: Any = None
        for alg in algorithms:
            try:
                alg_obj = jwt.get_algorithm_by_name(alg)
            except NotImplementedError:
                raise ValueError(
                    f"unsupported JWT algorithm {alg!r} (asymmetric algorithms need "
                    'the cryptography package: pip install "securemcp[jwt]")'
                ) from None
            try:
                prepared = alg_obj.prepare_key(key)
            except (jwt.PyJWTError, TypeError, ValueError):
                raise ValueError(f"the key is not usable with {alg}") from None
            if hasattr(prepared, "public_key"):
                prepared = prepared.public_key()
            weakness = _key_weakness(alg, alg_obj, prepared)
            if weakness:
                raise ValueError(weakness)

        self._key = prepared
        self._algorithms = list(algorithms)
        self._audience = audience
        self._issuer = issuer
        self._scope_claim = scope_claim
        self._subject_claim = subject_claim
        self._leeway = float(leeway)
        self._require = list(require)

    def authenticate(self, token: str, *, now: float) -> Principal:
        """Verify ``token`` at ``now``; its principal, or AuthenticationError."""
        import jwt

        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": self._require,
                    # PyJWT reads the system clock for these; ours is `now`.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(_jwt_reason(jwt, exc)) from None

        # The comparisons are written to fail closed when `now` is NaN.
        leeway = self._leeway
        exp = _numeric_date(payload, "exp")
        if exp is not None and not now < exp + leeway:
            raise AuthenticationError("expired token")
        nbf = _numeric_date(payload, "nbf")
        if nbf is not None and not now + leeway >= nbf:
            raise AuthenticationError("token not yet valid")
        iat = _numeric_date(payload, "iat")
        if iat is not None and not now + leeway >= iat:
            raise AuthenticationError("token issued in the future")

        subject = payload.get(self._subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(f"missing or malformed claim: {self._subject_claim}")
        return Principal(
            subject=subject,
            scopes=self._scopes(payload.get(self._scope_claim)),
            expires_at=None if exp is None else exp + leeway,
            claims=payload,
        )

    def _scopes(self, claim: Any) -> frozenset[str]:
        if claim is None:
            return frozenset()
        if isinstance(claim, str):
            return frozenset(claim.split())
        if isinstance(claim, list) and all(isinstance(scope, str) for scope in claim):
            return frozenset(claim)
        raise AuthenticationError(f"malformed claim: {self._scope_claim}")


def _key_weakness(alg: str, alg_obj: Any, prepared: Any) -> str | None:
    if alg.startswith("HS"):
        # RFC 7518 §3.2: an HMAC key at least as long as the hash output.
        needed = int(alg[2:]) // 8
        if len(prepared) < needed:
            return f"the {alg} secret must be at least {needed} bytes long"
        return None
    check = getattr(alg_obj, "check_key_length", None)  # PyJWT >= 2.10
    return check(prepared) if check is not None else None


def _jwt_reason(jwt: Any, exc: Exception) -> str:
    # Fixed phrases only: PyJWT's own messages could quote parts of the token.
    reasons: tuple[tuple[type[Exception], str], ...] = (
        (jwt.InvalidSignatureError, "invalid signature"),
        (jwt.InvalidAlgorithmError, "algorithm not allowed"),
        (jwt.InvalidAudienceError, "invalid audience"),
        (jwt.InvalidIssuerError, "invalid issuer"),
        (jwt.DecodeError, "malformed token"),
    )
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim: {exc.claim}"
    return next((reason for cls, reason in reasons if isinstance(exc, cls)), "invalid token")


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
        if len(parts) != 2 or parts[0].lower() != "bearer" or not _B64TOKEN.fullmatch(parts[1]):
            raise AuthenticationError(
                "malformed Authorization header (expected: Bearer <token>)",
                error="invalid_request",
            )
        tokens.append(parts[1])
    remaining: list[str] = []
    for entry in subprotocols:
        if entry.startswith(SUBPROTOCOL_TOKEN_PREFIX):
            token = entry[len(SUBPROTOCOL_TOKEN_PREFIX) :]
            if not _B64TOKEN.fullmatch(token):
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
