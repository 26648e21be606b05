"""Replication: ``users`` gets ``REPLICA IDENTITY FULL``.

PostgreSQL 15 lets a publication filter rows (``WHERE (fallback_region = 'us')``)
on UPDATE and DELETE only when the filter's columns are in the replica
identity. ``fallback_region`` is nullable, so it cannot be in a replica
identity index: the whole old row is the identity. With it, an opt-out (an
UPDATE that takes the row out of the filter) reaches the fallback as a DELETE.
The old row is written to this region's own WAL only; what the fallback
receives is the published row (see docs/replication.md).

Revision ID: p0004
Revises: p0003_audit_agg
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "p0004"
down_revision: str | None = "p0003_audit_agg"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE users REPLICA IDENTITY FULL")


def downgrade() -> None:
    op.execute("ALTER TABLE users REPLICA IDENTITY DEFAULT")
