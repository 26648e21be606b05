"""Regions: a user's opt-in fallback region, the e-mail directory and its outbox.

``directory`` maps HMAC-SHA256(directory key, normalised e-mail) to the home
region: every region holds every user's entry, never the e-mail itself.
``directory_outbox`` holds one row per entry still to be pushed to a peer
region; the row goes once that peer acknowledged it. ``users.in_directory``
is false for users who signed up before the region had a topology: the
pusher adds their entries (a backfill), then sets it.

Revision ID: p0002
Revises: p0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "p0002"
down_revision: str | None = "p0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("fallback_region", sa.Text(), nullable=True))
    op.add_column(
        "users",
        sa.Column("in_directory", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "users_not_in_directory",
        "users",
        ["id"],
        postgresql_where=sa.text("NOT in_directory"),
    )
    op.create_table(
        "directory",
        sa.Column("email_hash", sa.String(64), primary_key=True),
        sa.Column("home_region", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "directory_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("peer", sa.Text(), nullable=False),
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("home_region", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("directory_outbox_due", "directory_outbox", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("directory_outbox_due", "directory_outbox")
    op.drop_table("directory_outbox")
    op.drop_table("directory")
    op.drop_index("users_not_in_directory", "users")
    op.drop_column("users", "in_directory")
    op.drop_column("users", "fallback_region")
