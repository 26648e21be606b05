"""Audit aggregation: the region's pseudonym key, and the aggregator's own tables.

``audit_pseudonym_key`` holds one random secret per region (created on first
use, never sent anywhere): actor ids leave the region only as HMAC under it.
``audit_agg_records`` and ``audit_agg_regions`` are filled only in the
aggregating region: per source region, the metadata of each audit record
(seq, time, event type, pseudonymous actor, chain hash) and the last verify
result and chain head that region reported.

Revision ID: p0003_audit_agg
Revises: p0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "p0003_audit_agg"
down_revision: str | None = "p0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "audit_pseudonym_key",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name="audit_pseudonym_key_one_row"),
    )
    op.create_table(
        "audit_agg_records",
        sa.Column("region", sa.Text(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(32), nullable=True),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("audit_agg_records_ts", "audit_agg_records", ["ts"])
    op.create_table(
        "audit_agg_regions",
        sa.Column("region", sa.Text(), primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("first_bad_seq", sa.BigInteger(), nullable=True),
        sa.Column("problems", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("audit_agg_regions")
    op.drop_index("audit_agg_records_ts", "audit_agg_records")
    op.drop_table("audit_agg_records")
    op.drop_table("audit_pseudonym_key")
