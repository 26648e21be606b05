"""Access tokens: short-lived ES256 JWTs signed with the region's key.

Verification pins ES256 (so ``alg: none`` and HS256-signed-with-the-public-key
are refused before any key is used), finds the key by ``kid`` among the
region's own keys only, and requires every claim the platform relies on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from skylift.platform.errors import AuthError
from skylift.platform.keys import Keyring

ALGORITHM = "ES256"
REQUIRED = ["exp", "iat", "jti", "sub", "home_region", "iss"]
#: kid -> (public key, region that issued it), for keys that are not this region's own
PeerLookup = Callable[[str], "tuple[ec.EllipticCurvePublicKey, str] | None"]


def issuer(region: str) -> str:
    return f"skylift-platform/{region}"


@dataclass(frozen=True)
class AccessClaims:
    sub: str
    home_region: str
    jti: str
    iat: int
    exp: int
    xr: str | None = None
    issuer_region: str = ""


def issue_access(
    keyring: Keyring,
    *,
    sub: str,
    home_region: str,
    region: str,
    ttl: int,
    now: int,
    xr: str | None = None,
) -> str:
    key = keyring.signing
    claims: dict[str, Any] = {
        "iss": issuer(region),
        "sub": sub,
        "home_region": home_region,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    if xr is not None:
        claims["xr"] = xr
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


def unverified_kid(token: str) -> str | None:
    """The ``kid`` of a token's header (to fetch a peer's keys before verifying)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


def verify_access(
    token: str,
    keyring: Keyring,
    region: str,
    leeway: int = 0,
    peers: PeerLookup | None = None,
) -> AccessClaims:
    """The token's claims, or :class:`AuthError` (one message for every way it can be wrong).

    ``peers`` finds keys of other regions; a token signed with one must name that
    region as its issuer.
    """
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise AuthError("invalid token")
        public: ec.EllipticCurvePublicKey | None = keyring.public_key(kid)
        signer = region
        if public is None and peers is not None and (found := peers(kid)) is not None:
            public, signer = found
        if public is None:
            raise AuthError("invalid token")
        claims = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            issuer=issuer(signer),
            leeway=leeway,
            options={"require": REQUIRED, "verify_exp": True, "verify_iat": True},
        )
        return AccessClaims(
            sub=str(claims["sub"]),
            home_region=str(claims["home_region"]),
            jti=str(claims["jti"]),
            iat=int(claims["iat"]),
            exp=int(claims["exp"]),
            xr=str(claims["xr"]) if isinstance(claims.get("xr"), str) else None,
            issuer_region=signer,
        )
    except jwt.PyJWTError:
        raise AuthError("invalid token") from None


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or :class:`AuthError`."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token")
    return token.strip()
