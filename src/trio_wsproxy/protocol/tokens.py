"""Signed access tokens: JWTs naming a member id, the groups it may join, an expiry.

Claims: ``sub`` (the id), ``groups`` (a list of group names; a name ending in ``*`` is a
prefix: ``"game-*"`` allows ``game-1``), ``exp`` (expiry, seconds since the epoch); an
identity provider's tokens may name them otherwise (:class:`TokenVerifier`'s
``id_claim`` and ``groups_claim``). Signed with HS256 and the relay's secret (any back
end can mint them), or with an identity provider's key: RS256, ES256 or EdDSA, checked
with its public key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from jwt.types import Options

# PyJWT is imported where it is used, not here: it imports the cryptography package
# whenever that is installed (10 MiB of memory and about 50 ms at start-up), which a relay
# without tokens never needs. A relay with a token secret loads it as it starts
# (:func:`preload`), so that no handshake waits for the import.

#: The signing algorithm; the only one accepted.
ALGORITHM = "HS256"


def preload() -> None:
    """Import PyJWT now (a relay with a token secret does, before it accepts anyone)."""
    import jwt  # noqa: F401


@attrs.frozen
class TokenRefusal:
    """Why a token does not admit a connection: 401 (no valid token) or 403 (not for this)."""

    status: int
    reason: str
    kind: str


def mint_token(
    secret: str | bytes,
    member_id: str,
    groups: Sequence[str],
    ttl: float,
    *,
    now: float | None = None,
) -> str:
    """A token for ``member_id`` to join ``groups`` (names, or prefixes ending in ``*``)
    for ``ttl`` seconds from ``now``."""
    if not member_id:
        raise ValueError("a token needs a member id")
    if not groups or any(not group for group in groups):
        raise ValueError("a token needs at least one non-empty group name or prefix")
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    issued = int(now if now is not None else time.time())
    claims = {"sub": member_id, "groups": list(groups), "iat": issued, "exp": issued + int(ttl)}
    import jwt

    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)


class KeySet(Protocol):
    """Keys an identity provider publishes (a JWKS), by key id (``kid``)."""

    def get(self, kid: str) -> tuple[Any, str] | None:
        """The key ``kid`` names and the one algorithm it is for, or None."""


@attrs.frozen
class TokenVerifier:
    """What a relay checks tokens with: an HS256 ``secret``, a ``public_key`` of an
    identity provider (PEM: RSA for RS256, P-256 for ES256, Ed25519 for EdDSA), or both;
    the ``issuer`` and ``audience`` the provider's tokens must name (None: not checked;
    the HS256 tokens of the back end's own are not the provider's); and the claims that
    name the member id (``id_claim``) and the groups it may join (``groups_claim``).

    Each token is checked with the one key its header's ``alg`` belongs to, and that
    algorithm only: ``none``, a token signed with the public key used as an HMAC secret,
    or one of another kind of key, are all refused as invalid."""

    secret: bytes | None = attrs.field(default=None, repr=False)
    public_key: Any = attrs.field(default=None, repr=False)
    public_algorithm: str | None = None
    #: An identity provider's published keys (``--jwks-url``), each checking the tokens
    #: whose ``kid`` names it.
    key_set: KeySet | None = attrs.field(default=None, repr=False)
    issuer: str | None = None
    audience: str | None = None
    id_claim: str = "sub"
    groups_claim: str = "groups"

    @classmethod
    def of(
        cls,
        secret: str | bytes | None = None,
        public_key_pem: bytes | None = None,
        *,
        key_set: KeySet | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        id_claim: str = "sub",
        groups_claim: str = "groups",
    ) -> TokenVerifier:
        """A verifier with the secret and the PEM public key given (at least one);
        ValueError for a key it cannot use (the message says why)."""
        if secret is None and public_key_pem is None and key_set is None:
            raise ValueError("a token verifier needs a secret, a public key or a key set")
        key, algorithm = (None, None) if public_key_pem is None else _public_key(public_key_pem)
        return cls(
            None if secret is None else _key(secret),
            key,
            algorithm,
            key_set,
            issuer,
            audience,
            id_claim,
            groups_claim,
        )

    def check(
        self, token: str | None, member_id: str, group: str, *, now: float | None = None
    ) -> TokenRefusal | None:
        """None when ``token`` admits ``member_id`` to ``group``; otherwise why not. The
        reasons say what is wrong with the token, never what it contains."""
        verdict = self.verify(token, member_id, group, now=now)
        return verdict if isinstance(verdict, TokenRefusal) else None

    def verify(
        self,
        token: str | None,
        member_id: str,
        group: str,
        *,
        now: float | None = None,
        groups_optional: bool = False,
    ) -> TokenRefusal | dict[str, Any]:
        """:meth:`check`, with the token's claims when it admits. A token without the
        groups claim (an identity provider's) admits to no group, unless
        ``groups_optional``: then something else decides (the back end's hooks)."""
        claims = self.identify(token, member_id, now=now)
        if isinstance(claims, TokenRefusal):
            return claims
        if groups_optional and self.groups_claim not in claims:
            return claims
        groups = claims.get(self.groups_claim)
        if not isinstance(groups, list) or not allows(groups, group):
            return TokenRefusal(
                HTTPStatus.FORBIDDEN, "access token does not allow this group", "token_group"
            )
        return claims

    def identify(
        self, token: str | None, member_id: str, *, now: float | None = None
    ) -> TokenRefusal | dict[str, Any]:
        """The claims of ``token`` when it is valid and for ``member_id`` (whatever
        groups it allows); otherwise why not."""
        if not token:
            return TokenRefusal(HTTPStatus.UNAUTHORIZED, "access token required", "token_missing")
        claims = self._claims(token, verify_exp=True)
        if isinstance(claims, TokenRefusal):
            return claims
        if now is not None and claims["exp"] <= now:
            return TokenRefusal(HTTPStatus.UNAUTHORIZED, "access token expired", "token_expired")
        if claims.get(self.id_claim) != member_id:
            return TokenRefusal(HTTPStatus.FORBIDDEN, "access token is for another id", "token_id")
        return claims

    def issued_after(self, token: str, moment: float) -> bool:
        """Whether ``token`` — one :meth:`check` admitted — says it was issued (its
        ``iat``, whole seconds since the epoch) after ``moment``. A token without a
        numeric ``iat`` was not issued after anything."""
        claims = self._claims(token, verify_exp=False)
        if isinstance(claims, TokenRefusal):
            return False
        issued = claims.get("iat")
        return isinstance(issued, int | float) and not isinstance(issued, bool) and issued > moment

    def _published(self, token: str) -> tuple[Any, str] | None:
        """The key of the key set that ``token``'s ``kid`` names, with its algorithm."""
        if self.key_set is None:
            return None
        import jwt

        kid = jwt.get_unverified_header(token).get("kid")
        return self.key_set.get(kid) if isinstance(kid, str) else None

    def _claims(self, token: str, *, verify_exp: bool) -> dict[str, Any] | TokenRefusal:
        import jwt

        invalid = TokenRefusal(HTTPStatus.UNAUTHORIZED, "invalid access token", "token_invalid")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except (jwt.InvalidTokenError, RecursionError):
            return invalid
        if algorithm == ALGORITHM and self.secret is not None:
            key: Any = self.secret
            provider = False  # (the back end's own token: no iss or aud of a provider's)
        elif algorithm is not None and algorithm == self.public_algorithm:
            key, provider = self.public_key, True
        else:
            published = self._published(token)
            if published is None or published[1] != algorithm:
                return invalid  # (none, or an algorithm no key here is for)
            key, provider = published[0], True
        required = ["exp", self.id_claim] if verify_exp else []
        options: Options = {
            "require": required,
            "verify_iat": False,
            "verify_exp": verify_exp,
            "verify_aud": provider and self.audience is not None and verify_exp,
            "verify_iss": provider and self.issuer is not None and verify_exp,
        }
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options=options,
                audience=self.audience,
                issuer=self.issuer,
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            return TokenRefusal(HTTPStatus.UNAUTHORIZED, "access token expired", "token_expired")
        except jwt.InvalidAudienceError:
            return TokenRefusal(
                HTTPStatus.UNAUTHORIZED, "access token is for another audience", "token_audience"
            )
        except jwt.InvalidIssuerError:
            return TokenRefusal(
                HTTPStatus.UNAUTHORIZED, "access token is from another issuer", "token_issuer"
            )
        except (jwt.InvalidTokenError, RecursionError):
            # RecursionError: PyJWT before 2.14 lets a JOSE header nested too deeply for
            # json out (2.14 and later refuse it as invalid); refused the same either way.
            return invalid


def unknown_key_id(verifier: TokenVerifier, token: str | None) -> str | None:
    """The ``kid`` that ``token`` names and ``verifier``'s key set lacks (so that a
    relay may fetch the provider's keys again before it checks the token), or None."""
    if not token or verifier.key_set is None:
        return None
    import jwt

    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except (jwt.InvalidTokenError, RecursionError):
        return None
    if isinstance(kid, str) and kid and verifier.key_set.get(kid) is None:
        return kid
    return None


def _public_key(pem: bytes) -> tuple[Any, str]:
    """An identity provider's public key from its PEM, and the one algorithm it is for."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too weak: 2048 at least")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an EC key on {key.curve.name}: ES256 needs P-256 (secp256r1)")
        return key, "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, "EdDSA"
    raise ValueError(f"a {type(key).__name__}: use an RSA, P-256 or Ed25519 public key")


def check_token(
    token: str | None,
    secret: str | bytes,
    member_id: str,
    group: str,
    *,
    now: float | None = None,
) -> TokenRefusal | None:
    """None when the HS256 ``token`` admits ``member_id`` to ``group``; otherwise why
    not (:meth:`TokenVerifier.check` with ``secret``)."""
    return TokenVerifier.of(secret).check(token, member_id, group, now=now)


def issued_after(token: str, secret: str | bytes, moment: float) -> bool:
    """Whether the HS256 ``token`` says it was issued after ``moment``
    (:meth:`TokenVerifier.issued_after` with ``secret``)."""
    return TokenVerifier.of(secret).issued_after(token, moment)


def allows(patterns: Iterable[object], group: str) -> bool:
    """Whether ``group`` matches one of ``patterns`` (exact names, or ``prefix*``)."""
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            continue
        if pattern.endswith("*"):
            if group.startswith(pattern[:-1]):
                return True
        elif pattern == group:
            return True
    return False


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the token secret is empty")
    return key
