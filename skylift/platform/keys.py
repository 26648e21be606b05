"""The region's ES256 signing keys on disk: generated on first start, rotated with overlap.

Each key is ``<key_dir>/<created>-<kid>.pem`` (PKCS#8, mode 0600), ``kid`` being
the RFC 7638 thumbprint of its public JWK. The newest key signs; every key
kept (the newest ``keep``) verifies and is published in the JWKS, so tokens
signed just before a rotation stay valid until they expire. Replicas on one
host share the directory; a file lock makes sure only one of them generates.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEEP = 2  # the signing key and the one before it


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created: int
    private_key: ec.EllipticCurvePrivateKey

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        return {**_jwk_members(self.public_key), "kid": self.kid, "use": "sig", "alg": "ES256"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk_members(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint: a kid that names the key itself."""
    canonical = json.dumps(_jwk_members(public), sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


@contextlib.contextmanager
def _locked(key_dir: Path) -> Iterator[None]:
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (key_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _write_new(key_dir: Path, now: int) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    kid = thumbprint(private.public_key())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = key_dir / f"{now:012d}-{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return SigningKey(kid, now, private)


def load_keys(key_dir: Path) -> list[SigningKey]:
    """Every key in the directory, newest first."""
    keys = []
    for path in sorted(key_dir.glob("*.pem"), reverse=True):
        created, _, kid = path.stem.partition("-")
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            continue
        keys.append(SigningKey(kid, int(created), private))
    return keys


def ensure_key(key_dir: Path) -> SigningKey:
    """The current signing key, generated if the region has none yet."""
    with _locked(key_dir):
        keys = load_keys(key_dir)
        return keys[0] if keys else _write_new(key_dir, int(time.time()))


def rotate(key_dir: Path, keep: int = KEEP) -> SigningKey:
    """Make a new signing key; keep the newest ``keep`` keys (the old ones still verify)."""
    with _locked(key_dir):
        existing = load_keys(key_dir)
        created = max([int(time.time())] + [k.created + 1 for k in existing])
        new = _write_new(key_dir, created)
        for old in existing[keep - 1 :]:
            (key_dir / f"{old.created:012d}-{old.kid}.pem").unlink(missing_ok=True)
        return new


class Keyring:
    """The keys a replica signs and verifies with; re-read when the directory changes."""

    def __init__(self, key_dir: Path, recheck: float = 1.0) -> None:
        self._dir = key_dir
        self._recheck = recheck
        self._checked = 0.0
        self._mtime = -1.0
        self._keys: list[SigningKey] = []
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self._recheck:
            return
        self._checked = now
        mtime = self._dir.stat().st_mtime
        if force or mtime != self._mtime:
            keys = load_keys(self._dir)
            if keys:
                self._keys, self._mtime = keys, mtime

    @property
    def signing(self) -> SigningKey:
        self._refresh()
        if not self._keys:
            raise RuntimeError(f"no signing key in {self._dir}: run ensure_key first")
        return self._keys[0]

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        self._refresh()
        for key in self._keys:
            if key.kid == kid:
                return key.public_key
        return None

    def jwks(self) -> dict[str, Any]:
        self._refresh()
        return {"keys": [k.public_jwk() for k in self._keys]}
