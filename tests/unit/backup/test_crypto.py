"""The streaming AES-GCM format: round trips in any pieces, refuses every alteration."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.backup.crypto import HEADER_SIZE, NONCE, TAG, Decryptor, Encryptor
from skylift.backup.errors import IntegrityError

KEY, SALT, CHUNK = b"k" * 32, b"s" * 16, 64


def encrypt(data: bytes, pieces: int = 3, key: bytes = KEY) -> bytes:
    enc = Encryptor(key, SALT, chunk_size=CHUNK)
    out = []
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        out += enc.update(data[i : i + step])
    out += enc.finish()
    return b"".join(out)


def decrypt(blob: bytes, step: int = 7, key: bytes = KEY) -> bytes:
    dec = Decryptor(key)
    out = []
    for i in range(0, len(blob), step):
        out += dec.update(blob[i : i + step])
    out.append(dec.finish())
    return b"".join(out)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5 * CHUNK + 3), pieces=st.integers(1, 9), step=st.integers(1, 200))
def test_round_trip_whatever_the_sizes_and_pieces(data: bytes, pieces: int, step: int) -> None:
    assert decrypt(encrypt(data, pieces), step) == data


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_size_is_header_plus_chunks(size: int) -> None:
    blob = encrypt(os.urandom(size))
    chunks = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER_SIZE + size + chunks * (NONCE + TAG)


def test_same_key_and_plaintext_give_the_same_ciphertext_and_nothing_else_does() -> None:
    data = os.urandom(4 * CHUNK)
    assert encrypt(data) == encrypt(data, pieces=1)  # what lets a rerun reuse its parts
    changed = bytearray(data)
    changed[CHUNK + 5] ^= 1
    a, b = encrypt(data), encrypt(bytes(changed))
    block = NONCE + CHUNK + TAG
    # only the changed chunk differs, and its nonce differs too (no nonce reuse)
    assert a[: HEADER_SIZE + block] == b[: HEADER_SIZE + block]
    second = slice(HEADER_SIZE + block, HEADER_SIZE + block + NONCE)
    assert a[second] != b[second]


def test_any_flipped_byte_is_refused() -> None:
    blob = encrypt(os.urandom(3 * CHUNK))
    for offset in range(HEADER_SIZE - 16, len(blob), 11):
        tampered = bytearray(blob)
        tampered[offset] ^= 0x01
        with pytest.raises(IntegrityError):
            decrypt(bytes(tampered))


def test_truncation_at_a_chunk_boundary_and_a_wrong_key_are_refused() -> None:
    blob = encrypt(os.urandom(3 * CHUNK + 10))
    cut = HEADER_SIZE + 2 * (NONCE + CHUNK + TAG)
    with pytest.raises(IntegrityError, match="fails authentication"):
        decrypt(blob[:cut])
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(blob[: HEADER_SIZE + 3])
    with pytest.raises(IntegrityError):
        decrypt(blob, key=b"x" * 32)
    with pytest.raises(IntegrityError, match="no skylift header"):
        decrypt(b"PGDMP" + blob[5:])
