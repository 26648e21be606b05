"""Region keys: 0600 files, never overwritten, never shown; sealed blobs name their region."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from skylift.backup.errors import IntegrityError, KeyMismatch, SecretMissing
from skylift.backup.keys import RegionKey


def test_key_file_is_0600_never_overwritten_and_never_in_repr(tmp_path: Path) -> None:
    key = RegionKey.generate("eu")
    path = tmp_path / "keys" / "eu.key"
    key.write_new(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        RegionKey.generate("eu").write_new(path)
    loaded = RegionKey.load(path, "eu")
    assert loaded == key
    assert key.secret.hex() not in repr(loaded) and "secret" not in repr(loaded)


def test_loading_another_regions_key_or_a_missing_one_says_what_to_do(tmp_path: Path) -> None:
    RegionKey.generate("us").write_new(tmp_path / "us.key")
    with pytest.raises(KeyMismatch, match="holds region 'us''s key, but region 'eu'"):
        RegionKey.load(tmp_path / "us.key", "eu")
    with pytest.raises(SecretMissing, match="skylift backup keygen --region eu"):
        RegionKey.load(tmp_path / "eu.key", "eu")
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(SecretMissing, match="not a skylift backup key"):
        RegionKey.load(tmp_path / "junk.key", "eu")


def test_sealed_blobs_open_only_with_their_regions_key() -> None:
    eu, us, eu2 = RegionKey.generate("eu"), RegionKey.generate("us"), RegionKey.generate("eu")
    blob = eu.seal("manifest", "b1", b"payload")
    assert eu.open("manifest", blob, "m") == ("b1", b"payload")
    with pytest.raises(KeyMismatch, match="belongs to region 'eu', not 'us'"):
        us.open("manifest", blob, "m")
    with pytest.raises(KeyMismatch, match=f"encrypted with key {eu.fingerprint}"):
        eu2.open("manifest", blob, "m")
    with pytest.raises(IntegrityError, match="is a manifest, not a data-key"):
        eu.open("data-key", blob, "m")
    tampered = bytearray(blob)
    tampered[-3] ^= 1
    with pytest.raises(IntegrityError, match="altered"):
        eu.open("manifest", bytes(tampered), "m")
