"""Load history for the forecaster and scaling events added through the API.

Revision ID: 0002_history
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_history"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "load_history",
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("step", sa.Float(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("service", "metric", "step", "start", name="pk_load_history"),
    )
    op.create_table(
        "scaling_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("min", sa.Integer(), nullable=True),
        sa.Column("multiplier", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scaling_events"),
        sa.UniqueConstraint("service", "name", name="uq_scaling_events_service_name"),
    )


def downgrade() -> None:
    op.drop_table("scaling_events")
    op.drop_table("load_history")
