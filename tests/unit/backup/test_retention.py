"""Retention: restic-style rules (pure), and expiry that never depends on deleting old messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from skylift.backup import retention
from skylift.backup.index import BackupRecord
from skylift.config.regions import Retention

HOUR = 3600.0


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def kept(backups: dict[str, str], **policy: int) -> set[str]:
    plan = retention.plan([(k, ts(v)) for k, v in backups.items()], Retention(**policy))
    return {k for k, reasons in plan.items() if reasons}


BACKUPS = {
    "jan31": "2026-01-31T03:00",
    "feb01": "2026-02-01T03:00",
    "feb14": "2026-02-14T03:00",
    "mar01a": "2026-03-01T03:00",
    "mar01b": "2026-03-01T15:00",
    "mar02": "2026-03-02T03:00",
    "mar03": "2026-03-03T03:00",
}


def test_keep_last_only() -> None:
    assert kept(BACKUPS, keep_last=2, keep_daily=0, keep_weekly=0, keep_monthly=0) == {
        "mar03",
        "mar02",
    }


def test_daily_keeps_the_newest_of_each_day() -> None:
    assert kept(BACKUPS, keep_last=1, keep_daily=3, keep_weekly=0, keep_monthly=0) == {
        "mar03",
        "mar02",
        "mar01b",
    }


def test_weekly_and_monthly_buckets() -> None:
    # ISO weeks: mar02/mar03 share a week (Mon 2 March), mar01 is the Sunday before
    assert kept(BACKUPS, keep_last=1, keep_daily=0, keep_weekly=2, keep_monthly=0) == {
        "mar03",
        "mar01b",
    }
    assert kept(BACKUPS, keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=3) == {
        "mar03",
        "feb14",
        "jan31",
    }


def test_the_newest_backup_is_always_kept() -> None:
    assert "mar03" in kept(BACKUPS, keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)


def record(backup_id: str, created: float, sent: float) -> BackupRecord:
    return BackupRecord(
        id=backup_id,
        region="eu",
        database="app",
        status="complete",
        created_at=created,
        finished_at=created,
        raw_bytes=1,
        bytes=1,
        sha256="x",
        parts=[{"message_id": 10 + int(created), "sent_at": sent}],
        manifest={"file_id": "m", "message_id": 20 + int(created), "sent_at": sent},
        wrapped_key="k",
        tables={},
        error=None,
        expired_at=None,
        retention={},
    )


class FakeIndex:
    def __init__(self, records: list[BackupRecord]) -> None:
        self.records = records
        self.expired: dict[str, dict[str, Any]] = {}

    def list(self, region: str | None = None, *, status: str | None = None) -> list[BackupRecord]:
        return [r for r in self.records if r.id not in self.expired]

    def expire(self, backup_id: str, info: dict[str, Any]) -> None:
        self.expired[backup_id] = info


class FakeBot:
    def __init__(self) -> None:
        self.deleted: list[int] = []

    def delete_message(self, chat_id: int | str, message_id: int) -> str | None:
        self.deleted.append(message_id)
        return None


def test_messages_older_than_48_hours_are_not_even_attempted() -> None:
    now = 1_000_000.0
    old = record("old", 1.0, now - 49 * HOUR)
    young = record("young", 2.0, now - 2 * HOUR)
    newest = record("new", 3.0, now)
    index, bot = FakeIndex([old, young, newest]), FakeBot()
    policy = Retention(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)
    expired = retention.apply(index, bot, "eu", -1, policy, now=lambda: now)  # type: ignore[arg-type]
    assert [e.id for e in expired] == ["old", "young"]
    assert bot.deleted == [12, 22]  # only the young backup's part and manifest
    assert index.expired["old"] == {"id": "old", "deleted_messages": [], "left_in_chat": [11, 21]}
    assert index.expired["young"]["deleted_messages"] == [12, 22]


def test_verify_reports_every_kind_of_difference() -> None:
    from skylift.backup.restore import compare_tables

    want = {
        "public.a": {"rows": 2, "checksum": "1"},
        "public.b": {"rows": 2, "checksum": "1"},
        "public.gone": {"rows": 1, "checksum": "1"},
    }
    got = {
        "public.a": {"rows": 3, "checksum": "1"},
        "public.b": {"rows": 2, "checksum": "9"},
        "public.new": {"rows": 0, "checksum": "0"},
    }
    assert compare_tables(want, got) == [
        "public.a: 3 rows, manifest says 2",
        "public.b: same row count but different content (checksum)",
        "public.gone: missing after restore",
        "public.new: restored but not in the manifest",
    ]
    assert compare_tables(want, want) == []
