"""Replication without secrets: ``users`` identified by (id, xr_target), not the whole row.

p0004 made the whole row the replica identity (``REPLICA IDENTITY FULL``)
because the publication's row filter needs its column in the identity and
``fallback_region`` is nullable. But PostgreSQL 15 also requires a column
list to include every identity column, so the whole row had to be published:
each opted-in user's ``password_hash`` reached the fallback region. Now:

- ``xr_target`` = ``coalesce(fallback_region, '')``, NOT NULL, kept by a
  trigger (the application still reads and writes ``fallback_region`` only);
- a unique index on ``(id, xr_target)`` is the replica identity, so the row
  filter ``xr_target = 'F'`` is allowed and an opt-out still reaches the
  fallback as a DELETE;
- publications list their columns without ``password_hash``
  (:data:`skylift.regions.replication.SECRET_COLUMNS`).

Revision ID: p0005
Revises: p0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "p0005"
down_revision: str | None = "p0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN xr_target text NOT NULL DEFAULT ''")
    op.execute("UPDATE users SET xr_target = coalesce(fallback_region, '')")
    op.execute(
        "CREATE FUNCTION skylift_users_xr_target() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN NEW.xr_target := coalesce(NEW.fallback_region, ''); RETURN NEW; END $$"
    )
    op.execute(
        "CREATE TRIGGER users_xr_target BEFORE INSERT OR UPDATE ON users "
        "FOR EACH ROW EXECUTE FUNCTION skylift_users_xr_target()"
    )
    op.execute("CREATE UNIQUE INDEX users_replica_identity ON users (id, xr_target)")
    op.execute("ALTER TABLE users REPLICA IDENTITY USING INDEX users_replica_identity")


def downgrade() -> None:
    op.execute("ALTER TABLE users REPLICA IDENTITY FULL")
    op.execute("DROP INDEX users_replica_identity")
    op.execute("DROP TRIGGER users_xr_target ON users")
    op.execute("DROP FUNCTION skylift_users_xr_target()")
    op.execute("ALTER TABLE users DROP COLUMN xr_target")
