"""The backup scheduler on a fake clock: survives any error, retries, one per region.

Finding 11: it died on any non-backup exception, a failed attempt counted as the
day's backup, and two schedulers could run at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from skylift.backup.errors import BackupError
from skylift.backup.index import BackupIndex
from skylift.backup.schedule import (
    RETRY_INITIAL,
    Scheduler,
    SchedulerAlreadyRunning,
    schedule_lock,
)
from skylift.config import LoadedConfig, load_config

CONFIG = """
regions:
  eu:
    database_url: postgresql://app@db.eu:5432/app
    backup:
      telegram: {bot_token_env: EU_TOKEN, chat_id: -100}
      key_file: keys/eu.key
      schedule: "0 3 * * *"
"""
FIRE = datetime(2026, 12, 3, 3, 0, tzinfo=UTC).timestamp()  # the cron's fire today


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    return load_config(path, environ={})


class FlakyBackup:
    """A backup step that fails as told (a bug, then a backup error), then succeeds."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls: list[float] = []

    def __call__(
        self, loaded: LoadedConfig, name: str, index: BackupIndex, work_dir: Path, now: float
    ) -> str:
        self.calls.append(now)
        backup_id = f"{name}-{len(self.calls)}"
        index.start(backup_id, name, "app", wrapped_key="k")
        index._clock = lambda: now  # created_at on the fake clock
        if self.failures:
            index.fail(backup_id, "interrupted")  # what run_backup leaves behind
            raise self.failures.pop(0)
        index.complete(backup_id, manifest={}, sha256="0", size=1, raw_bytes=1, tables={})
        return f"{name}: backup {backup_id}"


def test_survives_any_error_and_retries_inside_its_window(
    loaded: LoadedConfig, tmp_path: Path
) -> None:
    events: list[tuple[str, str, str, dict[str, Any]]] = []
    step = FlakyBackup([KeyError("a bug in a step"), BackupError("Telegram said 502")])
    scheduler = Scheduler(loaded, tmp_path / "work", step=step, events=lambda *e: events.append(e))
    now = FIRE + 30
    (line,) = scheduler.tick(now)  # the injected bug: recorded, not raised
    assert line.startswith("eu: failed: 'a bug in a step'; retrying in 60s")
    assert events[-1][0] == "backup_failed" and events[-1][2] == "error"
    assert scheduler.tick(now + 30) == []  # backing off, not given up
    # the failed attempt did not count as today's backup: retried once the back-off ends
    (line,) = scheduler.tick(now + RETRY_INITIAL)
    assert "Telegram said 502" in line and "retrying in 120s" in line
    assert scheduler.tick(now + RETRY_INITIAL + 100) == []
    (line,) = scheduler.tick(now + RETRY_INITIAL + 2 * RETRY_INITIAL)
    assert line == "eu: backup eu-3"
    assert [e[0] for e in events] == ["backup_failed", "backup_failed", "backup_recovered"]
    assert step.calls == [now, now + 60, now + 180]  # three tries within the hour
    assert scheduler.tick(now + 3600) == []  # today's backup is done
    assert len(scheduler.tick(FIRE + 86400 + 5)) == 1  # tomorrow's fire runs again


def test_a_store_that_is_down_is_a_line_not_a_crash(
    loaded: LoadedConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: object, **__: object) -> BackupIndex:
        raise OSError("connection refused")

    monkeypatch.setattr(BackupIndex, "open", down)
    scheduler = Scheduler(loaded, tmp_path / "work", step=FlakyBackup([]))
    assert scheduler.tick(FIRE + 30) == [
        "schedule: cannot read the backup index: connection refused; retrying"
    ]


def test_only_one_scheduler_per_region(loaded: LoadedConfig) -> None:
    from typer.testing import CliRunner

    from skylift.cli.app import app

    with schedule_lock(loaded.state_dir, ["eu"]):
        with (
            pytest.raises(SchedulerAlreadyRunning, match="region 'eu' is already running"),
            schedule_lock(loaded.state_dir, ["eu"]),
        ):
            pass
        second = CliRunner().invoke(
            app, ["backup", "schedule", "--once", "-c", str(loaded.path)], catch_exceptions=False
        )
        assert second.exit_code == 1
        assert "backup scheduler for region 'eu' is already running (pid" in second.output
    with schedule_lock(loaded.state_dir, ["eu"]):  # released: the next one may run
        pass
