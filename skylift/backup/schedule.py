"""Cron schedules for backups: what is due is pure, running it is not.

A region is due when its cron expression (UTC) fired after the region's last
*successful* backup started. Missed fires collapse into one run, as with cron.
A failed attempt does not count: the scheduler retries with a doubling
back-off (``RETRY_INITIAL`` doubling up to ``RETRY_MAX``, so a daily backup
gets many tries within its day) until a backup succeeds.

The scheduler survives any error (a database that is down, a bug in a step):
each failure is logged, recorded as an event in the store when the store can
be reached, and retried. Only one scheduler runs per region: each holds an
``flock`` on ``<state_dir>/backup-schedule-<region>.lock`` for its lifetime
(the kernel drops it when the process exits, even on SIGKILL), so a second
one refuses to start with a message naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import structlog

from skylift.backup import retention
from skylift.backup.context import RegionContext
from skylift.backup.errors import BackupError
from skylift.backup.index import EXPIRED, LIVE, BackupIndex
from skylift.backup.run import run_backup
from skylift.config import LoadedConfig
from skylift.engine.schedule import Cron

log = structlog.get_logger("skylift.backup")
LOOKBACK_DAYS = 31
RETRY_INITIAL = 60.0
"""Seconds before the first retry of a failed scheduled backup (doubles each time)."""
RETRY_MAX = 3600.0
"""Longest wait between two retries."""


class SchedulerAlreadyRunning(BackupError):
    """Another ``skylift backup schedule`` holds a region's schedule lock."""


def due(cron: str, now: float, last_started: float | None) -> bool:
    """Has ``cron`` fired (UTC) since ``last_started``? Pure."""
    fired_at = last_fire(cron, now)
    if fired_at is None:
        return False
    return last_started is None or fired_at > last_started


def last_fire(cron: str, now: float) -> float | None:
    """When ``cron`` last fired at or before ``now`` (UTC epoch seconds). Pure."""
    local = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
    fired = Cron.parse(cron).last_fire(local, LOOKBACK_DAYS)
    return None if fired is None else fired.replace(tzinfo=UTC).timestamp()


@dataclass
class Attempts:
    """Failed attempts of one region since its last success (kept in memory)."""

    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None

    def failed(self, now: float, error: str) -> float:
        """Record a failure; returns when to retry."""
        self.failures += 1
        self.last_error = error
        self.retry_at = now + min(RETRY_MAX, RETRY_INITIAL * 2 ** (self.failures - 1))
        return self.retry_at


BackupStep = Callable[[LoadedConfig, str, BackupIndex, Path, float], str]
EventSink = Callable[[str, str, str, dict[str, Any]], None]


def back_up_region(
    loaded: LoadedConfig, name: str, index: BackupIndex, work_dir: Path, now: float
) -> str:
    """One scheduled backup of region ``name`` and the retention after it; a summary line."""
    region = loaded.config.regions[name]
    assert region.backup is not None
    ctx = RegionContext.from_config(loaded, name)
    with ctx.bot() as bot:
        result = run_backup(ctx, index, bot, work_dir=work_dir)
        retention.apply(index, bot, name, ctx.chat_id, region.backup.retention, now=time.time)
    return f"{name}: backup {result.id} ({result.parts} parts)"


@dataclass
class Scheduler:
    """Runs the regions' due backups; each call of :meth:`tick` is one pass."""

    loaded: LoadedConfig
    work_dir: Path
    step: BackupStep = back_up_region
    events: EventSink | None = None
    attempts: dict[str, Attempts] = field(default_factory=dict)
    index: BackupIndex | None = None

    def regions(self) -> dict[str, str]:
        """Region -> cron, for every region with a schedule."""
        return {
            name: region.backup.schedule
            for name, region in sorted(self.loaded.config.regions.items())
            if region.backup is not None and region.backup.schedule is not None
        }

    def tick(self, now: float) -> list[str]:
        """Back up every region that is due and not backing off; never raises an Exception."""
        lines: list[str] = []
        try:
            if self.index is None:  # opened (and migrated) once, reconnects by itself
                self.index = BackupIndex.open(self.loaded.store_url, self.loaded.state_dir)
        except Exception as exc:  # the store is down: every region waits for the next pass
            log.error("backup schedule cannot read the index", error=str(exc))
            return [f"schedule: cannot read the backup index: {exc}; retrying"]
        for name, cron in self.regions().items():
            line = self._region(self.index, name, cron, now)
            if line is not None:
                lines.append(line)
        return lines

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None

    def _region(self, index: BackupIndex, name: str, cron: str, now: float) -> str | None:
        attempts = self.attempts.setdefault(name, Attempts())
        try:
            done = [r for r in index.list(name) if r.status in (LIVE, EXPIRED)]
            last = max((r.created_at for r in done), default=None)
            if not due(cron, now, last) or now < attempts.retry_at:
                return None
            line = self.step(self.loaded, name, index, self.work_dir, now)
        except Exception as exc:  # any failure: recorded, retried with back-off
            error = str(exc) or type(exc).__name__
            retry_at = attempts.failed(now, error)
            wait = retry_at - now
            if isinstance(exc, BackupError):
                log.error("scheduled backup failed", region=name, error=error, retry_in=wait)
            else:
                log.exception("scheduled backup failed", region=name, retry_in=wait)
            self._event(
                "backup_failed",
                f"scheduled backup of region {name} failed ({attempts.failures} in a row): "
                f"{error}; retrying in {wait:.0f}s",
                "error",
                {"region": name, "failures": attempts.failures, "retry_in": wait},
            )
            return f"{name}: failed: {error}; retrying in {wait:.0f}s"
        if attempts.failures:
            self._event(
                "backup_recovered",
                f"scheduled backup of region {name} succeeded after "
                f"{attempts.failures} failed attempt(s)",
                "info",
                {"region": name, "failures": attempts.failures},
            )
        self.attempts[name] = Attempts()
        return line

    def _event(self, kind: str, message: str, level: str, data: dict[str, Any]) -> None:
        if self.events is None:
            return
        try:
            self.events(kind, message, level, data)
        except Exception as exc:  # the store is down: the log line above still says it
            log.warning("backup event not stored", kind=kind, error=str(exc))


def store_events(loaded: LoadedConfig) -> EventSink:
    """An event sink writing to the config's state store (opened once, lazily)."""
    from skylift.store import Store  # alembic is heavy: only where events are written

    store: list[Store] = []

    def add(kind: str, message: str, level: str, data: dict[str, Any]) -> None:
        if not store:
            store.append(Store.open(loaded.store_url, state_dir=loaded.state_dir))
        store[0].add_event(kind, message, level=level, data=data)

    return add


@contextlib.contextmanager
def schedule_lock(state_dir: Path, regions: list[str]) -> Iterator[None]:
    """Hold every region's schedule lock, or raise :class:`SchedulerAlreadyRunning`."""
    handles: list[IO[str]] = []
    try:
        for region in regions:
            path = state_dir / f"backup-schedule-{region}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            handle: IO[str] = path.open("a+")
            handles.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise SchedulerAlreadyRunning(
                    f"a backup scheduler for region {region!r} is already running "
                    f"({holder}): only one may run per region; stop it first or leave it be"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
        yield
    finally:
        for handle in handles:
            handle.close()  # closing drops the flock


def run_due(loaded: LoadedConfig, work_dir: Path, *, now: float) -> list[str]:
    """Back up every region whose schedule is due; one line per region that ran."""
    scheduler = Scheduler(loaded, work_dir, events=store_events(loaded))
    try:
        return scheduler.tick(now)
    finally:
        scheduler.close()
