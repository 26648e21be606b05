"""The backup index table (migration ``0002_backups``), as a SQLAlchemy Core table.

Core and its own MetaData keep a backup worker free of the ORM and alembic
(its memory budget is tight); :func:`register` copies the table onto the
store's metadata, which the tests do so the store's
models-vs-migrations check sees it.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, MetaData, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

Json = JSON().with_variant(JSONB(), "postgresql")
metadata = MetaData()

backups = Table(
    "backups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("region", String(64), nullable=False),
    Column("database", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # running, complete, failed, expired
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("raw_bytes", BigInteger),
    Column("bytes", BigInteger),
    Column("sha256", String(64)),
    Column("parts", Json, nullable=False),
    Column("manifest", Json),
    Column("wrapped_key", Text),  # destroyed at expiry
    Column("tables", Json, nullable=False),
    Column("error", Text),
    Column("expired_at", Float),
    Column("retention", Json, nullable=False),
    Index("ix_backups_region_created_at", "region", "created_at"),
)


def register(target: MetaData) -> None:
    """Put the backups table on ``target`` (the store's metadata), once."""
    if "backups" not in target.tables:
        backups.to_metadata(target)
