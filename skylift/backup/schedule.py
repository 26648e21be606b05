"""Cron schedules for backups: what is due is pure, running it is not.

A region is due when its cron expression (UTC) fired after the region's last
backup attempt started. Missed fires collapse into one run, as with cron.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

from skylift.backup import retention
from skylift.backup.context import RegionContext
from skylift.backup.errors import BackupError
from skylift.backup.index import BackupIndex
from skylift.backup.run import run_backup
from skylift.config import LoadedConfig
from skylift.engine.schedule import Cron

log = structlog.get_logger("skylift.backup")
LOOKBACK_DAYS = 31


def due(cron: str, now: float, last_started: float | None) -> bool:
    """Has ``cron`` fired (UTC) since ``last_started``? Pure."""
    local = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
    fired = Cron.parse(cron).last_fire(local, LOOKBACK_DAYS)
    if fired is None:
        return False
    fired_at = fired.replace(tzinfo=UTC).timestamp()
    return last_started is None or fired_at > last_started


def run_due(loaded: LoadedConfig, work_dir: Path, *, now: float) -> list[str]:
    """Back up every region whose schedule is due; one line per region that ran."""
    lines: list[str] = []
    with BackupIndex.open(loaded.store_url, loaded.state_dir) as index:
        for name, region in sorted(loaded.config.regions.items()):
            if region.backup is None or region.backup.schedule is None:
                continue
            records = index.list(name)
            last = max((r.created_at for r in records), default=None)
            if not due(region.backup.schedule, now, last):
                continue
            ctx = RegionContext.from_config(loaded, name)
            try:
                with ctx.bot() as bot:
                    result = run_backup(ctx, index, bot, work_dir=work_dir)
                    retention.apply(
                        index, bot, name, ctx.chat_id, region.backup.retention, now=time.time
                    )
                lines.append(f"{name}: backup {result.id} ({result.parts} parts)")
            except BackupError as exc:
                log.error("scheduled backup failed", region=name, error=str(exc))
                lines.append(f"{name}: failed: {exc}")
    return lines
