"""Backup index: one row per regional backup (see skylift.backup.index).

Revision ID: 0002_backups
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_backups"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
# A frozen copy of skylift.backup.tables at this revision: migrations never import the
# features they serve, so the store does not depend on the backup package.


def upgrade() -> None:
    # a backup worker (which runs without alembic) may have created it already
    if "backups" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "backups",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("database", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("raw_bytes", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("parts", Json, nullable=False),
        sa.Column("manifest", Json, nullable=True),
        sa.Column("wrapped_key", sa.Text(), nullable=True),
        sa.Column("tables", Json, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("expired_at", sa.Float(), nullable=True),
        sa.Column("retention", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_backups"),
    )
    op.create_index("ix_backups_region_created_at", "backups", ["region", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_backups_region_created_at", table_name="backups")
    op.drop_table("backups")
