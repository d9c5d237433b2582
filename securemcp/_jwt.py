"""JSON Web Tokens as credentials: :class:`JWTAuthenticator`, verified with PyJWT.

PyJWT is optional (``pip install "securemcp[jwt]"``): it is imported when a
:class:`JWTAuthenticator` is made. Pure like the rest of authentication: the
time checks use the ``now`` passed in, never the system clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._tokens import AuthenticationError, Principal

__all__ = ["JWTAuthenticator"]


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
