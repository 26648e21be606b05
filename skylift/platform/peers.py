"""Calls between regions' platforms: signed, through the peer's edge, always with a timeout.

Peers reach each other through their edges (the topology's edge addresses),
with the selector header naming the region meant, so the edge routes the call
there. A request between platforms carries ``Skylift-Signature: t=<unix>,v1=<hex>``:
HMAC-SHA256 over the time, method, path, the body's SHA-256 and the signed
headers, keyed by a key derived (HKDF) from the directory key every region
shares; a signature older than :data:`WINDOW` seconds is refused. Hand-written
because it is twenty lines over the standard library's ``hmac``; no
well-kept library signs plain HTTP requests with a shared key this simply.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SIGNATURE = "skylift-signature"
#: set on a login one platform forwards to the user's home: the home answers it itself
FORWARDED_LOGIN = "skylift-forwarded-login"
#: the client address of a forwarded login (trusted only with a valid signature)
FORWARDED_CLIENT = "skylift-forwarded-client"
SELECTOR = "x-skylift-region"
WINDOW = 300  # seconds a signature stays valid (clock skew between regions included)


def peer_key(directory_key: bytes) -> bytes:
    """The key that signs requests between platforms, separate from the e-mail hash key."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"skylift-platform peer requests v1"
    ).derive(directory_key)


def _mac(key: bytes, t: int, method: str, path: str, body: bytes, signed: Sequence[str]) -> str:
    message = "\n".join(
        [str(t), method.upper(), path, hashlib.sha256(body).hexdigest(), *signed]
    ).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(
    key: bytes, *, method: str, path: str, body: bytes, now: int, signed: Sequence[str] = ()
) -> str:
    return f"t={now},v1={_mac(key, now, method, path, body, signed)}"


def verify(
    key: bytes,
    header: str | None,
    *,
    method: str,
    path: str,
    body: bytes,
    now: int,
    signed: Sequence[str] = (),
) -> bool:
    """True for a signature made with ``key`` over this very request, recently."""
    if not header:
        return False
    parts = dict(p.partition("=")[::2] for p in header.split(","))
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - t) > WINDOW:
        return False
    expected = _mac(key, t, method, path, body, signed)
    return hmac.compare_digest(expected, parts.get("v1", ""))


def http_client(timeout: float) -> httpx.AsyncClient:
    """One client per replica for every peer call: pooled, bounded by ``timeout``."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=5),
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment must not see peer traffic
    )
