"""Bring the platform's own database (not skylift's store) to the newest schema.

Replicas starting together each call :func:`upgrade`; a PostgreSQL advisory
lock held for the transaction makes all but one wait, then find nothing to do.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from skylift.platform.db import sqlalchemy_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LOCK_KEY = 0x5B1F7_0001  # distinct from the store's migration lock


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.set_main_option("version_table", "platform_alembic_version")
    return cfg


def upgrade(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
