"""Autoscaling paused by an operator (``skylift autoscale pause``), kept across restarts.

Revision ID: 0003_autoscale_pause
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_autoscale_pause"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "autoscale_pauses",
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("paused_at", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("service", name="pk_autoscale_pauses"),
    )


def downgrade() -> None:
    op.drop_table("autoscale_pauses")
