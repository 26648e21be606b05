"""Signing keys on disk and access-token verification, without a server."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from skylift.platform.errors import AuthError
from skylift.platform.keys import Keyring, ensure_key, load_keys, rotate
from skylift.platform.settings import PlatformSettings, SettingsError
from skylift.platform.tokens import issue_access, verify_access


def test_first_start_generates_one_private_key_that_later_starts_reuse(tmp_path: Path) -> None:
    first = ensure_key(tmp_path / "keys")
    assert ensure_key(tmp_path / "keys").kid == first.kid
    files = list((tmp_path / "keys").glob("*.pem"))
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600


def test_rotation_keeps_the_previous_key_only(tmp_path: Path) -> None:
    a = ensure_key(tmp_path)
    b = rotate(tmp_path)
    c = rotate(tmp_path)
    assert [k.kid for k in load_keys(tmp_path)] == [c.kid, b.kid]
    assert a.kid not in {k["kid"] for k in Keyring(tmp_path).jwks()["keys"]}


def test_issue_and_verify_round_trip_and_region_pinning(tmp_path: Path) -> None:
    ensure_key(tmp_path)
    ring = Keyring(tmp_path)
    now = int(time.time())
    token = issue_access(ring, sub="u1", home_region="eu", region="eu", ttl=60, now=now)
    claims = verify_access(token, ring, "eu")
    assert (claims.sub, claims.home_region, claims.exp) == ("u1", "eu", now + 60)
    with pytest.raises(AuthError):
        verify_access(token, ring, "us")  # another region's issuer
    with pytest.raises(AuthError):
        verify_access("garbage", ring, "eu")
    payload = jwt.decode(token, options={"verify_signature": False})
    hs = jwt.encode(payload, "s" * 32, algorithm="HS256", headers={"kid": ring.signing.kid})
    with pytest.raises(AuthError):
        verify_access(hs, ring, "eu")


def test_settings_from_env_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SKYLIFT_PLATFORM_DATABASE_URL"):
        PlatformSettings.from_env({})
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://app:s3cret@db/app\n")
    settings = PlatformSettings.from_env(
        {
            "SKYLIFT_PLATFORM_DATABASE_URL_FILE": str(secret),
            "SKYLIFT_PLATFORM_REDIS_URL": "redis://127.0.0.1:6379/0",
            "SKYLIFT_PLATFORM_POOL_SIZE": "7",
            "SKYLIFT_REPLICA": "web-3",
        }
    )
    assert settings.database_url == "postgresql://app:s3cret@db/app"
    assert (settings.pool_size, settings.replica) == (7, "web-3")
    assert "s3cret" not in repr(settings)
