"""Streaming authenticated encryption of a backup: AES-256-GCM in fixed chunks.

Format (all integers big-endian)::

    header   = b"SKYBAK01" | u32 chunk_size | 16-byte stream salt
    chunk_i  = 12-byte nonce | AES-GCM(plaintext_i) with 16-byte tag
    aad_i    = header | u64 i | u8 last

Every plaintext chunk is ``chunk_size`` bytes except the last (0..chunk_size);
the last carries ``last = 1`` in its associated data, so cutting the stream
at a chunk boundary, reordering or splicing chunks all fail authentication.

The nonce is synthetic (HMAC of index, flag and plaintext under a separate
key), so the same data key encrypting the same bytes gives the same
ciphertext, which is what lets a rerun recognise the parts it already
uploaded, while different plaintext never reuses a nonce.
Memory is one chunk (1 MiB by default) whatever the stream's size.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from skylift.backup.errors import IntegrityError
from skylift.backup.keys import derive

MAGIC = b"SKYBAK01"
HEADER_SIZE = len(MAGIC) + 4 + 16
CHUNK_SIZE = 1024 * 1024
NONCE, TAG = 12, 16


def _keys(data_key: bytes, salt: bytes) -> tuple[AESGCM, bytes]:
    return AESGCM(derive(data_key, "stream", salt)), derive(data_key, "stream-nonce", salt)


class Encryptor:
    """Feed plaintext, get ciphertext; call :meth:`finish` once at the end."""

    def __init__(self, data_key: bytes, salt: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        self._aead, self._nonce_key = _keys(data_key, salt)
        self._chunk = chunk_size
        self._header = MAGIC + struct.pack(">I", chunk_size) + salt
        self._buffer = bytearray()
        self._index = 0
        self._started = False

    def _seal(self, plaintext: bytes, last: bool) -> bytes:
        info = struct.pack(">QB", self._index, int(last))
        nonce = hmac.new(self._nonce_key, info + plaintext, hashlib.sha256).digest()[:NONCE]
        self._index += 1
        return nonce + self._aead.encrypt(nonce, plaintext, self._header + info)

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [self._header]

    def update(self, data: bytes) -> list[bytes]:
        out = self._start()
        self._buffer += data
        # keep at least one byte back: only finish() may write the last chunk
        while len(self._buffer) > self._chunk:
            out.append(self._seal(bytes(self._buffer[: self._chunk]), last=False))
            del self._buffer[: self._chunk]
        return out

    def finish(self) -> list[bytes]:
        out = self._start()
        out.append(self._seal(bytes(self._buffer), last=True))
        self._buffer.clear()
        return out


class Decryptor:
    """Feed ciphertext in any pieces, get plaintext; :meth:`finish` checks the end."""

    def __init__(self, data_key: bytes) -> None:
        self._data_key = data_key
        self._aead: AESGCM | None = None
        self._header = b""
        self._block = 0
        self._buffer = bytearray()
        self._index = 0
        self._done = False

    def _parse_header(self) -> bool:
        if len(self._buffer) < HEADER_SIZE:
            return False
        header = bytes(self._buffer[:HEADER_SIZE])
        if not header.startswith(MAGIC):
            raise IntegrityError("the backup stream has no skylift header: wrong file or corrupted")
        (chunk,) = struct.unpack(">I", header[8:12])
        self._aead, _ = _keys(self._data_key, header[12:])
        self._header = header
        self._block = NONCE + chunk + TAG
        del self._buffer[:HEADER_SIZE]
        return True

    def _open(self, block: bytes, last: bool) -> bytes:
        assert self._aead is not None
        info = struct.pack(">QB", self._index, int(last))
        try:
            plain = self._aead.decrypt(block[:NONCE], block[NONCE:], self._header + info)
        except InvalidTag:
            raise IntegrityError(
                f"chunk {self._index} of the backup fails authentication: the backup was "
                "altered, truncated or is encrypted with another data key"
            ) from None
        self._index += 1
        return plain

    def update(self, data: bytes) -> list[bytes]:
        if self._done:
            raise IntegrityError("data after the end of the backup stream: it was altered")
        self._buffer += data
        if self._aead is None and not self._parse_header():
            return []
        out = []
        # a full block is only known not to be the last once more bytes follow it
        while len(self._buffer) > self._block:
            block = bytes(self._buffer[: self._block])
            del self._buffer[: self._block]
            out.append(self._open(block, last=False))
        return out

    def finish(self) -> bytes:
        if self._aead is None or len(self._buffer) < NONCE + TAG:
            raise IntegrityError("the backup stream is truncated: a part is missing or cut short")
        plain = self._open(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._done = True
        return plain
