"""`backup run --region all`: the run-time checks (token values, resolved chats) and summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylift.backup.all_regions import (
    RegionOutcome,
    SharedBackupTarget,
    check_apart,
    summary,
)
from skylift.backup.context import RegionContext
from skylift.config import load_config

CONFIG = """
regions:
  eu:
    database_url: postgresql://app@db.eu:5432/app
    backup:
      telegram: {bot_token_env: EU_TOKEN, chat_id: '@eu_backups'}
      key_file: keys/eu.key
  us:
    database_url: postgresql://app@db.us:5432/app
    backup:
      telegram: {bot_token_file: us-token, chat_id: -100222}
      key_file: keys/us.key
  asia:
    database_url: postgresql://app@db.asia:5432/app
    backup:
      telegram: {bot_token_env: ASIA_TOKEN, chat_id: -100333}
      key_file: keys/asia.key
"""


def contexts(tmp_path: Path, env: dict[str, str], us_token: str) -> dict[str, RegionContext]:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    (tmp_path / "us-token").write_text(us_token + "\n")
    loaded = load_config(path, environ={})
    return {n: RegionContext.from_config(loaded, n, environ=env) for n in loaded.config.regions}


def no_resolve(ctx: RegionContext) -> None:
    raise AssertionError(f"{ctx.name}: only '@channel' chats are resolved")


def test_distinct_tokens_pass_and_an_unreadable_token_only_fails_its_region(
    tmp_path: Path,
) -> None:
    ctx = contexts(tmp_path, {"EU_TOKEN": "1:eu"}, "2:us")
    missing = check_apart(ctx, resolve=lambda c: -100111 if c.name == "eu" else no_resolve(c))
    assert set(missing) == {"asia"} and "ASIA_TOKEN" in missing["asia"]


def test_one_token_in_a_variable_and_a_file_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    ctx = contexts(tmp_path, {"EU_TOKEN": "1:secret", "ASIA_TOKEN": "3:asia"}, "1:secret")
    with pytest.raises(SharedBackupTarget) as err:
        check_apart(ctx, resolve=lambda c: None)
    assert "regions eu and us use the same bot token (the same token value" in str(err.value)
    assert "secret" not in str(err.value)


def test_a_channel_name_resolving_to_another_regions_chat_id_is_refused(tmp_path: Path) -> None:
    ctx = contexts(tmp_path, {"EU_TOKEN": "1:eu", "ASIA_TOKEN": "3:asia"}, "2:us")
    with pytest.raises(SharedBackupTarget) as err:
        check_apart(ctx, resolve=lambda c: -100222)  # '@eu_backups' is us's chat
    assert "regions eu and us back up to the same chat (-100222" in str(err.value)


def test_summary_names_each_regions_result() -> None:
    data, table = summary(
        [
            RegionOutcome("asia", False, 0.4, error="exit 1: pg_dump failed"),
            RegionOutcome("eu", True, 2.0, result={"id": "eu-1", "parts": 3, "bytes": 10}),
        ]
    )
    assert data["ok"] is False and data["failed"] == ["asia"]
    assert data["regions"]["eu"] == {
        "ok": True,
        "seconds": 2.0,
        "backup": {"id": "eu-1", "parts": 3, "bytes": 10},
    }
    lines = table.splitlines()
    assert lines[1].split()[:2] == ["asia", "FAILED"] and "pg_dump failed" in lines[1]
    assert lines[2].split()[:3] == ["eu", "ok", "backup"]
    assert lines[-1] == "1 of 2 region(s) backed up; failed: asia"
