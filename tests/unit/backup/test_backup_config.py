"""Region config: secrets never in the YAML, parts that can be downloaded again."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylift.backup.postgres import pin_archive_time, same_database
from skylift.backup.schedule import due
from skylift.config import ConfigError, load_config

GOOD = """
regions:
  eu:
    database_url: postgresql://app@db.eu:5432/app
    backup:
      telegram: {bot_token_env: EU_TOKEN, chat_id: -100}
      key_file: keys/eu.key
"""


def issues(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "skylift.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    return {i.path: i.message for i in err.value.issues}


def test_a_backup_only_config_needs_no_services(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(GOOD)
    region = load_config(path, environ={}).config.regions["eu"]
    assert region.backup is not None
    assert region.backup.telegram.part_size == 19 * 1024 * 1024
    assert region.backup.telegram.api_url == "https://api.telegram.org"


def test_the_example_is_valid() -> None:
    loaded = load_config(Path(__file__).parents[3] / "examples" / "backup.yaml", environ={})
    assert set(loaded.config.regions) == {"eu"}


def test_nothing_at_all_is_refused(tmp_path: Path) -> None:
    assert "no services and no regions" in issues(tmp_path, "project: x\n")["(root)"]


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ("postgresql://app:pw@db/app", "regions.eu.database_url", "contains a password"),
        ("postgresql://app@db", "regions.eu.database_url", "names no database"),
        ("mysql://app@db/app", "regions.eu.database_url", "postgresql://"),
    ],
)
def test_database_url_rules(tmp_path: Path, change: str, where: str, message: str) -> None:
    found = issues(tmp_path, GOOD.replace("postgresql://app@db.eu:5432/app", change))
    assert message in found[where]


@pytest.mark.parametrize(
    ("telegram", "message"),
    [
        ("{bot_token_env: EU_TOKEN, chat_id: -100, part_size: 20Mi}", "never restored"),
        ("{bot_token_env: EU_TOKEN, chat_id: -100, part_size: lots}", "invalid size"),
        ("{chat_id: -100}", "exactly one of bot_token_env"),
        ("{bot_token_env: E, bot_token_file: t, chat_id: -100}", "exactly one of bot_token_env"),
        ("{bot_token_env: '123:ABC', chat_id: -100}", "never the token itself"),
        ("{bot_token_env: E, chat_id: -100, api_url: 'https://x/bot123:ABC'}", "must not contain"),
    ],
)
def test_telegram_rules(tmp_path: Path, telegram: str, message: str) -> None:
    text = GOOD.replace("{bot_token_env: EU_TOKEN, chat_id: -100}", telegram)
    found = issues(tmp_path, text)
    assert any(message in m for m in found.values()), found


def test_bad_cron_is_reported_with_its_path(tmp_path: Path) -> None:
    found = issues(tmp_path, GOOD + "      schedule: '61 * * * *'\n")
    assert "regions.eu.backup.schedule" in found


def test_schedule_is_due_once_per_fire() -> None:
    fire = 1_700_006_400.0  # 2023-11-15 00:00 UTC
    assert due("0 0 * * *", fire + 60, last_started=None)
    assert due("0 0 * * *", fire + 60, last_started=fire - 3600)
    assert not due("0 0 * * *", fire + 60, last_started=fire + 1)


def test_same_database_treats_loopback_spellings_alike() -> None:
    assert same_database(
        "postgresql://a@localhost/app", "postgresql+psycopg://b@127.0.0.1:5432/app"
    )
    assert not same_database("postgresql://a@localhost/app", "postgresql://a@localhost/app2")


def test_pin_archive_time_fixes_only_the_creation_time() -> None:
    head = bytearray(b"PGDMP\x01\x0e\x00\x04\x08\x01" + b"\x00" * 5)
    head += b"".join(b"\x00" + v.to_bytes(4, "little") for v in (12, 34, 5, 25, 10, 126, 0))
    head += b"\x03\x00\x00\x00app" + b"\x00" * 20
    pinned = pin_archive_time(bytes(head))
    assert len(pinned) == len(head) and pinned[:16] == head[:16] and pinned[51:] == head[51:]
    assert pinned != head and pin_archive_time(pinned) == pinned
    assert pin_archive_time(b"not a dump" * 10) == b"not a dump" * 10
