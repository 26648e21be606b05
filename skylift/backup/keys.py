"""Region keys: created once per region, kept in a 0600 file, never logged.

A region key is 32 random bytes. It never encrypts dump data directly: each
backup has its own random data key, and the region key seals the small things
that must survive a lost state store (the manifest, which carries the data
key) so that region key + bot token + chat are enough to restore.

Sealed blobs start with a plaintext header naming the region and the key's
fingerprint (both authenticated), so a wrong key or another region's manifest
is refused with a message saying which region and key it needs, instead of
a bare "authentication failed".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from skylift.backup.errors import IntegrityError, KeyMismatch, SecretMissing

KEY_FORMAT = "skylift-backup-key/1"
SEAL_MAGIC = b"SKYSEAL1"
KEY_BYTES = 32


def derive(key: bytes, purpose: str, salt: bytes | None = None) -> bytes:
    """A sub-key per purpose, so one key never serves two ciphers."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=purpose.encode()).derive(key)


@dataclass(frozen=True)
class RegionKey:
    """One region's key; ``repr`` shows only the region and fingerprint."""

    region: str
    secret: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"skylift-key-id\0" + self.secret).hexdigest()[:16]

    @classmethod
    def generate(cls, region: str) -> RegionKey:
        return cls(region, secrets.token_bytes(KEY_BYTES))

    def write_new(self, path: Path) -> None:
        """Create the key file with mode 0600; refuse to overwrite an existing key."""
        path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {
                "format": KEY_FORMAT,
                "region": self.region,
                "key": base64.b64encode(self.secret).decode(),
            }
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body + "\n")

    @classmethod
    def load(cls, path: Path, region: str) -> RegionKey:
        """Read ``region``'s key; another region's key file is refused by name."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            secret = base64.b64decode(data["key"], validate=True)
            owner = str(data["region"])
            if data.get("format") != KEY_FORMAT or len(secret) != KEY_BYTES:
                raise ValueError
        except FileNotFoundError:
            raise SecretMissing(
                f"key file {path} for region {region!r} does not exist: create it with "
                f"`skylift backup keygen --region {region}` (and keep a copy offline)"
            ) from None
        except (OSError, ValueError, KeyError, TypeError):
            raise SecretMissing(
                f"key file {path} is not a skylift backup key: restore it from your offline copy"
            ) from None
        if owner != region:
            raise KeyMismatch(
                f"key file {path} holds region {owner!r}'s key, but region {region!r} needs its "
                f"own key: point regions.{region}.backup.key_file at region {region!r}'s key"
            )
        return cls(owner, secret)

    # -- sealing ---------------------------------------------------------------

    def seal(self, purpose: str, name: str, payload: bytes) -> bytes:
        """Encrypt ``payload`` (e.g. a manifest) with a header naming region and key."""
        header = json.dumps(
            {"region": self.region, "key": self.fingerprint, "purpose": purpose, "name": name},
            sort_keys=True,
        ).encode()
        nonce = secrets.token_bytes(12)
        body = AESGCM(derive(self.secret, purpose)).encrypt(nonce, payload, header)
        return SEAL_MAGIC + struct.pack(">H", len(header)) + header + nonce + body

    def open(self, purpose: str, blob: bytes, what: str) -> tuple[str, bytes]:
        """Decrypt a sealed blob; returns its name and payload or says whose it is."""
        if not blob.startswith(SEAL_MAGIC) or len(blob) < len(SEAL_MAGIC) + 2:
            raise IntegrityError(f"{what} is not a skylift {purpose}: wrong file or corrupted")
        (size,) = struct.unpack(">H", blob[8:10])
        raw_header = blob[10 : 10 + size]
        try:
            header = json.loads(raw_header)
            region, key_id, kind = header["region"], header["key"], header["purpose"]
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{what}: unreadable header, the file is corrupted") from None
        if kind != purpose:
            raise IntegrityError(f"{what} is a {kind}, not a {purpose}")
        if region != self.region:
            raise KeyMismatch(
                f"{what} belongs to region {region!r}, not {self.region!r}: restore it with "
                f"region {region!r}'s config and key (residency: regions never mix backups)"
            )
        if key_id != self.fingerprint:
            raise KeyMismatch(
                f"{what} was encrypted with key {key_id} but region {self.region!r}'s key file "
                f"holds key {self.fingerprint}: use the key the backup was made with"
            )
        nonce, body = blob[10 + size : 22 + size], blob[22 + size :]
        try:
            payload = AESGCM(derive(self.secret, purpose)).decrypt(nonce, body, raw_header)
        except InvalidTag:
            raise IntegrityError(f"{what} fails authentication: it was altered") from None
        return str(header.get("name", "")), payload
