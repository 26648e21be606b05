"""Opt-in replication between two real PostgreSQL servers: a home primary and a fallback.

The home's platform schema is migrated for real (p0005 makes (id, xr_target)
the replica identity); the reconcile steps of :mod:`skylift.regions.replication_sync` build the
publication, the copy database and the subscription. Checked: only opted-in
rows cross, an update follows, opting out deletes the copy, a non-opted user
has no row anywhere on the fallback server, a second pass changes nothing, a
publisher without ``wal_level=logical`` is named with its fix, and a change of
publisher (what ``region promote`` causes) empties and re-copies the copy,
and no password hash reaches the fallback.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from skylift.platform.migrate import upgrade
from skylift.regions import replication as r
from skylift.regions.replication_sync import (
    ensure_copy_table,
    ensure_publication,
    ensure_subscription,
)
from tests.fixtures.postgres import PostgresCluster, running_cluster
from tests.polling import wait_for

LOGICAL = (
    "-c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 "
    "-c wal_retrieve_retry_interval=500ms"  # workers (re)start sooner: a faster resync
)
HOME, FALLBACK = "eu-west", "us"
PAIR = r.Pair(HOME, FALLBACK)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PostgresCluster, PostgresCluster]]:
    with running_cluster(LOGICAL) as home, running_cluster(LOGICAL) as fallback:
        for cluster in (home, fallback):
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE platform")
            upgrade(cluster.dsn("platform"))  # the fallback's own users table, too
        yield home, fallback


def add_user(dsn: str, email: str, fallback: str | None) -> str:
    user_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email, password_hash, home_region, created_at, updated_at, "
            "fallback_region) VALUES (%s, %s, 'h', %s, %s, %s, %s)",
            (user_id, email, HOME, now, now, fallback),
        )
    return user_id


def query(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(statement, args).fetchall()  # type: ignore[arg-type]


def everywhere(cluster: PostgresCluster, email: str) -> dict[str, int]:
    """Rows with ``email`` in every database of the server that has a users table."""
    found = {}
    for (name,) in query(cluster.dsn(), "SELECT datname FROM pg_database WHERE datallowconn"):
        has = query(cluster.dsn(name), "SELECT to_regclass('users') IS NOT NULL")[0][0]
        if has:
            found[name] = query(
                cluster.dsn(name), "SELECT count(*) FROM users WHERE email = %s", email
            )[0][0]
    return found


def sync(home: PostgresCluster, fallback: PostgresCluster, conninfo: str | None = None) -> str:
    columns = ensure_publication(home.dsn("platform"), HOME, FALLBACK, 5.0)
    copy_url = ensure_copy_table(fallback.dsn("platform"), PAIR, columns, 5.0)
    return ensure_subscription(
        copy_url, PAIR, conninfo or r.publisher_conninfo(home.dsn("platform")), 5.0
    )


def copy_rows(fallback: PostgresCluster) -> dict[str, str | None]:
    rows = query(fallback.dsn(PAIR.database), "SELECT email, display_name FROM users")
    return {str(e): d for e, d in rows}


def opted_in(home: PostgresCluster) -> set[str]:
    rows = query(
        home.dsn("platform"), "SELECT email FROM users WHERE fallback_region = %s", FALLBACK
    )
    return {str(e) for (e,) in rows}


def test_only_opted_in_rows_cross_and_opt_out_removes_them(
    servers: tuple[PostgresCluster, PostgresCluster],
) -> None:
    home, fallback = servers
    home_db = home.dsn("platform")
    add_user(home_db, "opted@example.test", FALLBACK)
    add_user(home_db, "asia@example.test", "asia")
    add_user(home_db, "same@example.test", None)
    # the fallback's own user with the same e-mail: the copy never collides with it
    add_user(fallback.dsn("platform"), "opted@example.test", None)

    assert sync(home, fallback) == "create"
    wait_for(lambda: "opted@example.test" in copy_rows(fallback), 15, "initial copy")
    assert set(copy_rows(fallback)) == {"opted@example.test"}
    assert sync(home, fallback) == "ok"  # idempotent

    # later opt-in, an update, then an opt-out, each streamed
    late = add_user(home_db, "late@example.test", None)
    query(
        home_db, "UPDATE users SET fallback_region = %s WHERE id = %s RETURNING 1", FALLBACK, late
    )
    query(home_db, "UPDATE users SET display_name = 'Ada' WHERE email = 'opted@example.test' "
                   "RETURNING 1")  # fmt: skip
    wait_for(
        lambda: copy_rows(fallback) == {"opted@example.test": "Ada", "late@example.test": None},
        15,
        "opt-in and update streamed",
    )
    query(home_db, "UPDATE users SET fallback_region = NULL WHERE id = %s RETURNING 1", late)
    wait_for(lambda: set(copy_rows(fallback)) == {"opted@example.test"}, 15, "opt-out deleted")

    # users who did not opt in to this fallback: no row in any database of its server
    for email in ("same@example.test", "asia@example.test", "late@example.test"):
        assert set(everywhere(fallback, email).values()) == {0}, email
    assert everywhere(fallback, "opted@example.test") == {"platform": 1, PAIR.database: 1}

    # the opted-in row crossed without its password hash: the copy has no such column
    def copy_columns() -> set[str]:
        return {c[0] for c in query(fallback.dsn(PAIR.database), r.USERS_COLUMNS)}

    assert "password_hash" not in copy_columns()
    assert {"email", "fallback_region"} <= copy_columns()
    # a copy made by a version that published the hash loses the column at the next pass
    with psycopg.connect(fallback.dsn(PAIR.database), autocommit=True) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN password_hash text")
    assert "password_hash" in copy_columns()
    assert sync(home, fallback) == "ok"
    assert "password_hash" not in copy_columns()


def test_new_publisher_empties_and_recopies(
    servers: tuple[PostgresCluster, PostgresCluster],
) -> None:
    """What `region promote` causes: the subscription follows another server (conninfo)."""
    home, fallback = servers
    # its own opted-in user: xdist may run this test on a worker (and servers) of its own
    add_user(home.dsn("platform"), f"moved-{uuid.uuid4().hex[:8]}@example.test", FALLBACK)
    sync(home, fallback)
    wait_for(
        lambda: copy_rows(fallback) and set(copy_rows(fallback)) == opted_in(home),
        15,
        "the copy before the move",
    )
    before = copy_rows(fallback)
    # the same server under another address stands in for the promoted standby
    moved = f"postgresql://skylift@localhost:{home.port}/platform"
    assert sync(home, fallback, moved) == "resync"
    wait_for(lambda: copy_rows(fallback) == before, 15, "re-copied from the new publisher")
    slots = query(home.dsn(), "SELECT slot_name FROM pg_replication_slots")
    assert slots == [(PAIR.subscription,)], slots  # the old slot was freed, the new one made
    assert sync(home, fallback, moved) == "ok"

    # the subscription lost but its slot left on the publisher: the next pass recreates both
    with psycopg.connect(fallback.dsn(PAIR.database), autocommit=True) as conn:
        conn.execute(f"ALTER SUBSCRIPTION {PAIR.subscription} DISABLE")
        conn.execute(f"ALTER SUBSCRIPTION {PAIR.subscription} SET (slot_name = NONE)")
        conn.execute(f"DROP SUBSCRIPTION {PAIR.subscription}")
        conn.execute("TRUNCATE users")
    assert sync(home, fallback, moved) == "create"
    wait_for(lambda: copy_rows(fallback) == before, 15, "re-copied after the lost subscription")


def test_publisher_without_logical_wal_is_named(
    servers: tuple[PostgresCluster, PostgresCluster], postgres_url: str
) -> None:
    upgrade(postgres_url)
    with pytest.raises(r.ReplicationError, match=r"wal_level=replica.*wal_level = logical"):
        ensure_publication(postgres_url, HOME, FALLBACK, 5.0)
