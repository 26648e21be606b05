"""The backup index in the state store: what was sent where, and what is live.

Each acknowledged part is committed as soon as Telegram acknowledges it, so
an interrupted run leaves behind exactly the parts a rerun can reuse.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, select, update

from skylift.backup.errors import BackupNotFound
from skylift.backup.tables import backups

LIVE, RUNNING, FAILED, EXPIRED = "complete", "running", "failed", "expired"


@dataclass(frozen=True)
class BackupRecord:
    id: str
    region: str
    database: str
    status: str
    created_at: float
    finished_at: float | None
    raw_bytes: int | None
    bytes: int | None
    sha256: str | None
    parts: list[dict[str, Any]]
    manifest: dict[str, Any] | None
    wrapped_key: str | None = field(repr=False)
    tables: dict[str, Any]
    error: str | None
    expired_at: float | None
    retention: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What ``skylift backup list`` shows (no key material)."""
        return {
            "id": self.id,
            "region": self.region,
            "database": self.database,
            "status": self.status,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "parts": len(self.parts),
            "bytes": self.bytes,
            "raw_bytes": self.raw_bytes,
            "sha256": self.sha256,
            "tables": len(self.tables),
            "error": self.error,
            "expired_at": self.expired_at,
        }


class BackupIndex:
    """Backup rows in the state store (SQLite or PostgreSQL), through SQLAlchemy Core."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    @classmethod
    def open(cls, url: str, state_dir: Path, *, migrate: bool = True) -> BackupIndex:
        """Connect to the store; ``migrate`` first brings its schema up to date (alembic)."""
        if migrate:
            from skylift.store import Store  # alembic is heavy: only where migrations run

            Store.open(url, state_dir=state_dir).close()
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
        else:
            engine = create_engine(url, pool_pre_ping=True)
        if not migrate:
            # the lean worker runs without alembic; 0002_backups skips an existing table
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            backups.create(engine, checkfirst=True)
        return cls(engine)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> BackupIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _update(self, backup_id: str, **values: Any) -> None:
        with self._engine.begin() as conn:
            done = conn.execute(update(backups).where(backups.c.id == backup_id).values(**values))
            if not done.rowcount:
                raise BackupNotFound(f"no backup {backup_id!r} in the index")

    def start(self, backup_id: str, region: str, database: str, wrapped_key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(backups).values(
                    id=backup_id,
                    region=region,
                    database=database,
                    status=RUNNING,
                    created_at=self._clock(),
                    parts=[],
                    wrapped_key=wrapped_key,
                    tables={},
                    retention={},
                )
            )

    def resume(self, backup_id: str) -> None:
        self._update(backup_id, status=RUNNING, error=None)

    def unfinished(self, region: str, database: str) -> BackupRecord | None:
        """The newest interrupted backup of this database that a rerun can continue."""
        query = (
            select(backups)
            .where(backups.c.region == region, backups.c.database == database)
            .where(backups.c.status.in_((RUNNING, FAILED)), backups.c.wrapped_key.is_not(None))
            .order_by(backups.c.created_at.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _record(row)

    def set_parts(self, backup_id: str, parts: list[dict[str, Any]]) -> None:
        self._update(backup_id, parts=list(parts))

    def complete(
        self,
        backup_id: str,
        *,
        manifest: dict[str, Any],
        sha256: str,
        size: int,
        raw_bytes: int,
        tables: dict[str, Any],
    ) -> None:
        self._update(
            backup_id,
            status=LIVE,
            finished_at=self._clock(),
            manifest=manifest,
            sha256=sha256,
            bytes=size,
            raw_bytes=raw_bytes,
            tables=tables,
            error=None,
        )

    def fail(self, backup_id: str, error: str) -> None:
        self._update(backup_id, status=FAILED, error=error, finished_at=self._clock())

    def expire(self, backup_id: str, retention: dict[str, Any]) -> None:
        """Mark expired and destroy the wrapped data key held here."""
        self._update(
            backup_id,
            status=EXPIRED,
            expired_at=self._clock(),
            wrapped_key=None,
            retention=retention,
        )

    def get(self, backup_id: str) -> BackupRecord:
        with self._engine.connect() as conn:
            row = conn.execute(select(backups).where(backups.c.id == backup_id)).first()
        if row is None:
            raise BackupNotFound(f"no backup {backup_id!r} in the index: see `skylift backup list`")
        return _record(row)

    def list(self, region: str | None = None, *, status: str | None = None) -> list[BackupRecord]:
        query = select(backups).order_by(backups.c.created_at, backups.c.id)
        if region is not None:
            query = query.where(backups.c.region == region)
        if status is not None:
            query = query.where(backups.c.status == status)
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def latest(self, region: str) -> BackupRecord:
        live = self.list(region, status=LIVE)
        if not live:
            raise BackupNotFound(
                f"region {region!r} has no complete backup in the index: run "
                f"`skylift backup run --region {region}` first"
            )
        return live[-1]


def _record(row: Any) -> BackupRecord:
    return BackupRecord(
        id=row.id,
        region=row.region,
        database=row.database,
        status=row.status,
        created_at=row.created_at,
        finished_at=row.finished_at,
        raw_bytes=row.raw_bytes,
        bytes=row.bytes,
        sha256=row.sha256,
        parts=list(row.parts or []),
        manifest=dict(row.manifest) if row.manifest else None,
        wrapped_key=row.wrapped_key,
        tables=dict(row.tables or {}),
        error=row.error,
        expired_at=row.expired_at,
        retention=dict(row.retention or {}),
    )
