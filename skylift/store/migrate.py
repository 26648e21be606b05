"""Bring a database to the newest schema; run by :meth:`Store.open` every time.

Concurrent openers (a controller and ``skylift status`` starting together)
are serialised, so only one of them creates the tables.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from skylift.store.lock import MIGRATION_LOCK_KEY

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    # configparser interpolation: a '%' in the path must be doubled
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return cfg


def head_revisions() -> set[str]:
    """Every head: features may add independent branches off one base revision."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine, state_dir: Path) -> None:
    """Apply every pending migration on every branch (no-op when already at the heads)."""
    cfg = alembic_config()
    with _file_lock(state_dir / "migrate.lock", engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # held until this transaction commits: other openers wait here
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


@contextlib.contextmanager
def _file_lock(path: Path, engine: Engine) -> Iterator[None]:
    """Blocking ``flock`` for SQLite (PostgreSQL locks in the database instead)."""
    if engine.dialect.name != "sqlite":
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
