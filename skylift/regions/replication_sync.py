"""Opt-in cross-region replication, the I/O side: reconcile and report the copies.

:func:`reconcile_fallback` is one level-triggered pass of a fallback region F
(its region daemon runs it every ``replication.every``): for each home region
H of another zone it makes sure H's current primary (its in-zone standby once
``region promote`` moved it there) publishes the rows of users who opted in
to F, and that F's server holds a subscription to that publisher in a
database of H's own. Each step is idempotent; a failed step is retried on the
next pass. Every connection has a connect timeout and a ``statement_timeout``.

Passwords: the config's database URLs carry none; this process and the
subscriber's server take theirs from libpq (``~/.pgpass``, ``PGPASSFILE``).
Nothing here logs a connection string with a password (:func:`database.redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql

from skylift.config.regions import libpq_url
from skylift.config.root import SkyliftConfig
from skylift.regions import replication as r
from skylift.regions.config import topology_of
from skylift.regions.database import one_line, redact
from skylift.regions.promotion import PromotionError, superseded_by

log = structlog.get_logger("skylift.regions.replication")
SUBSCRIBE_TIMEOUT = 30.0  # CREATE SUBSCRIPTION waits for a consistent point on the publisher


@dataclass(frozen=True)
class PairOutcome:
    """What one pass did for one pair (``action`` is None when it failed)."""

    pair: r.Pair
    action: r.Action | None
    error: str | None = None


@contextlib.contextmanager
def _connect(url: str, timeout: float) -> Iterator[psycopg.Connection[Any]]:
    try:
        conn = psycopg.connect(
            libpq_url(url),
            connect_timeout=max(2, int(timeout)),
            autocommit=True,
            options=f"-c statement_timeout={int(timeout * 1000)}",
            application_name="skylift-replication",
        )
    except psycopg.Error as exc:
        raise r.ReplicationError(f"{redact(url)}: {one_line(exc)}") from None
    with conn:
        try:
            yield conn
        except psycopg.Error as exc:
            raise r.ReplicationError(f"{redact(url)}: {one_line(exc)}") from None


def owner_of(config: SkyliftConfig, base_dir: Path, home: str, timeout: float) -> str:
    """The URL of the database that holds ``home``'s users now (its promoted standby?)."""
    region = config.regions[home]
    try:
        promoted = superseded_by(config, base_dir, home, timeout=timeout) is not None
    except PromotionError:
        promoted = False
    return r.owner_url(
        region.database_url,
        region.standby.database_url if region.standby else None,
        promoted,
    )


def ensure_publication(
    url: str, home: str, fallback: str, timeout: float
) -> list[tuple[str, str, bool]]:
    """On ``home``'s primary: the publication for ``fallback``; returns the columns it sends.

    Every column of ``users`` but the secret ones (:data:`replication.SECRET_COLUMNS`),
    re-listed when a migration adds a column.
    """
    with _connect(url, timeout) as conn:
        row = conn.execute(r.PUBLISHER_CHECKS).fetchone()
        assert row is not None
        problem = r.publisher_problem(home, row[0], row[1])
        if problem is not None:
            raise r.ReplicationError(problem)
        columns = r.published_columns(
            [(str(c[0]), str(c[1]), bool(c[2])) for c in conn.execute(r.USERS_COLUMNS)]
        )
        name = r.publication_name(fallback)
        table = sql.SQL("users ({}) WHERE ({} = {})").format(
            sql.SQL(", ").join(sql.Identifier(c[0]) for c in columns),
            sql.Identifier(r.FILTER_COLUMN),
            sql.Literal(fallback),
        )
        if conn.execute(r.PUBLICATION_EXISTS, (name,)).fetchone() is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), table)
            )
        else:
            found = conn.execute(r.PUBLICATION_FILTER, (name,)).fetchone()
            wanted = (r.row_filter(fallback), [c[0] for c in columns])
            if found is None or (found[0], list(found[1] or [])) != wanted:
                conn.execute(
                    sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), table)
                )
        return columns


def ensure_copy_table(
    server_url: str, pair: r.Pair, columns: list[tuple[str, str, bool]], timeout: float
) -> str:
    """The copy's database and users table on the fallback's server; returns its URL."""
    with _connect(server_url, timeout) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (pair.database,)
        ).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pair.database)))
    copy_url = r.with_database(server_url, pair.database)
    with _connect(copy_url, timeout) as conn:
        conn.execute(r.copy_table_sql(columns))
        present = {str(c[0]): str(c[1]) for c in conn.execute(r.USERS_COLUMNS).fetchall()}
        for statement in r.missing_columns_sql(columns, present):
            conn.execute(statement)
        for secret in sorted(r.SECRET_COLUMNS & present.keys()):  # a copy made before p0005
            conn.execute(sql.SQL("ALTER TABLE users DROP COLUMN {}").format(sql.Identifier(secret)))
    return copy_url


def _drop_subscription(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop without touching the old publisher (it may be down or fenced): slot_name NONE."""
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
    conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


def drop_old_slot(conninfo: str, slot: str, timeout: float) -> str | None:
    """Best effort: free the old publisher's slot (else it keeps WAL). Returns why not.

    Its walsender may still be attached for a moment after the subscription went:
    it is ended first (nothing else uses a slot named after this pair).
    """
    deadline = time.monotonic() + timeout
    try:
        with _connect(conninfo, timeout) as conn:
            while True:
                row = conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                if row is None:
                    return None
                if row[0] is None:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    return None
                if time.monotonic() > deadline:
                    return f"slot {slot} is still in use on {redact(conninfo)}"
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                time.sleep(0.1)
    except r.ReplicationError as exc:
        return str(exc)


def ensure_subscription(copy_url: str, pair: r.Pair, conninfo: str, timeout: float) -> r.Action:
    """One step towards a subscription of ``copy_url`` to ``conninfo``'s publication."""
    with _connect(copy_url, timeout) as conn:
        row = conn.execute(r.SUBSCRIPTION, (pair.subscription,)).fetchone()
        current = r.SubscriptionFacts(str(row[0]), bool(row[1])) if row else None
        action = r.decide_subscription(current, conninfo)
        ident = sql.Identifier(pair.subscription)
        if action == "enable":
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(ident))
        if action == "resync":
            assert current is not None
            _drop_subscription(conn, pair.subscription)
            conn.execute("TRUNCATE users")
            why = drop_old_slot(current.conninfo, pair.subscription, timeout)
            if why is not None:
                log.warning("replication_old_slot_kept", pair=pair.key, error=why)
        if action == "create":
            # a slot of this pair left on the publisher (a subscription dropped without it,
            # a fallback server rebuilt) would refuse the new one, and keeps WAL: ours to free
            why = drop_old_slot(conninfo, pair.subscription, timeout)
            if why is not None:
                raise r.ReplicationError(why)
        if action in ("create", "resync"):
            conn.execute(f"SET statement_timeout = {int(max(timeout, SUBSCRIBE_TIMEOUT) * 1000)}")
            conn.execute(
                sql.SQL(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = true)"
                ).format(ident, sql.Literal(conninfo), sql.Identifier(pair.publication))
            )
        return action


def sync_pair(config: SkyliftConfig, base_dir: Path, pair: r.Pair, timeout: float) -> PairOutcome:
    """Publication on the home's owner, copy table and subscription on the fallback's server."""
    try:
        owner = owner_of(config, base_dir, pair.home, timeout)
        columns = ensure_publication(owner, pair.home, pair.fallback, timeout)
        copy_url = ensure_copy_table(
            config.regions[pair.fallback].database_url, pair, columns, timeout
        )
        action = ensure_subscription(copy_url, pair, r.publisher_conninfo(owner), timeout)
    except r.ReplicationError as exc:
        return PairOutcome(pair, None, str(exc))
    return PairOutcome(pair, action)


def reconcile_fallback(
    config: SkyliftConfig, base_dir: Path, fallback: str, timeout: float = 5.0
) -> list[PairOutcome]:
    """One pass for the copies region ``fallback`` holds (one pair per home of another zone)."""
    pairs = r.pairs(topology_of(config), fallback=fallback)
    return [sync_pair(config, base_dir, pair, timeout) for pair in pairs]


def pair_status(
    config: SkyliftConfig, base_dir: Path, pair: r.Pair, timeout: float = 3.0
) -> r.PairStatus:
    """State, rows and lag of one pair, read from both ends (either may be unreachable)."""
    copy_url = r.with_database(config.regions[pair.fallback].database_url, pair.database)
    try:
        owner = owner_of(config, base_dir, pair.home, timeout)
        with _connect(copy_url, timeout) as conn:
            sub = conn.execute(r.SUBSCRIPTION, (pair.subscription,)).fetchone()
            stat = conn.execute(
                "SELECT bool_or(pid IS NOT NULL), "
                "extract(epoch FROM now() - max(latest_end_time))::float8 "
                "FROM pg_stat_subscription WHERE subname = %s",
                (pair.subscription,),
            ).fetchone()
            states = [
                str(s[0])
                for s in conn.execute(
                    "SELECT srsubstate FROM pg_subscription_rel sr JOIN pg_subscription s "
                    "ON s.oid = sr.srsubid WHERE s.subname = %s",
                    (pair.subscription,),
                ).fetchall()
            ]
            (rows,) = conn.execute("SELECT count(*) FROM users").fetchone() or (None,)
    except r.ReplicationError as exc:
        missing = "does not exist" in str(exc)
        return r.PairStatus(
            pair.home, pair.fallback, "missing" if missing else "error",
            error=None if missing else str(exc),
        )  # fmt: skip
    running = bool(stat and stat[0])
    state = r.subscription_state(sub is not None, bool(sub and sub[1]), running, states)
    lag_bytes, error = None, None
    try:
        with _connect(owner, timeout) as conn:
            found = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (pair.subscription,),
            ).fetchone()
            lag_bytes = int(found[0]) if found and found[0] is not None else None
    except r.ReplicationError as exc:
        error = f"publisher: {exc}"
    age = float(stat[1]) if stat and stat[1] is not None else None
    lag_seconds = 0.0 if lag_bytes == 0 else age
    return r.PairStatus(
        pair.home, pair.fallback, state, int(rows) if rows is not None else None,
        lag_bytes, lag_seconds, redact(owner), error,
    )  # fmt: skip


async def keep_copies(
    config: SkyliftConfig, base_dir: Path, fallback: str, stop: asyncio.Event
) -> None:
    """The region daemon's loop: reconcile ``fallback``'s copies every ``replication.every``.

    Off the control path (a thread, bounded calls); a pair that fails is logged
    with its fix and retried on the next pass; a change of state is logged once.
    """
    settings = config.replication
    if settings is None:
        return
    last: dict[str, str] = {}
    while not stop.is_set():
        try:
            outcomes = await asyncio.to_thread(
                reconcile_fallback, config, base_dir, fallback, settings.timeout
            )
        except r.ReplicationError as exc:  # the config itself (names): said every pass
            log.error("replication_failed", region=fallback, error=str(exc))
            outcomes = []
        for outcome in outcomes:
            key = outcome.pair.key
            if outcome.error is not None:
                if last.get(key) != outcome.error:
                    log.warning("replication_pair_failed", pair=key, error=outcome.error)
                last[key] = outcome.error
            elif outcome.action != "ok" or last.get(key) != "ok":
                log.info("replication_pair", pair=key, action=outcome.action)
                last[key] = "ok" if outcome.action == "ok" else str(outcome.action)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.every)
