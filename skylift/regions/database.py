"""A region's PostgreSQL as the control plane sees it: role, promotion, fencing.

Every call opens its own short connection with ``connect_timeout`` and a
``statement_timeout``, so an unreachable or hung server costs seconds, never
a hang. The functions are synchronous (psycopg); async callers run them in a
thread.

Fencing: ``ALTER SYSTEM SET default_transaction_read_only = on`` plus
``pg_reload_conf()`` turns every new transaction read-only, including those
of connections already open in a pool (a reload applies to them), and it
survives a restart of the server (``postgresql.auto.conf``). It is a guard
against skylift's own platform writing, not against a client that sets
``transaction_read_only`` off on purpose: that is what the durable promotion
record (:data:`PROMOTIONS_TABLE` in the promoted database, and the
``promotions.json`` of the region state dirs) is for.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from skylift.config.regions import libpq_url

PROMOTIONS_TABLE = "skylift_region_promotions"
CONNECT_TIMEOUT = 3  # seconds (libpq's own minimum is 2)
STATEMENT_TIMEOUT = 5.0


class DatabaseError(RuntimeError):
    """A database could not be reached or refused; the message says which and why."""


@dataclass(frozen=True)
class DatabaseRole:
    """What ``region status`` shows of one database."""

    url: str
    reachable: bool
    in_recovery: bool | None = None  # True: a standby; False: a primary (or promoted)
    read_only: bool | None = None  # fenced (default_transaction_read_only on)
    error: str | None = None

    @property
    def role(self) -> str:
        if not self.reachable:
            return "unreachable"
        return "standby" if self.in_recovery else "primary"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "role": self.role}


@dataclass(frozen=True)
class Promotion:
    """One ``region promote``: ``region``'s database now lives in ``holder``'s standby."""

    region: str
    holder: str
    at: float
    old_primary_fenced: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _connect(url: str, timeout: float) -> psycopg.Connection[Any]:
    try:
        conn = psycopg.connect(
            libpq_url(url),
            connect_timeout=max(2, int(timeout)),
            autocommit=True,
            options=f"-c statement_timeout={int(STATEMENT_TIMEOUT * 1000)}",
        )
    except psycopg.Error as exc:
        raise DatabaseError(f"{redact(url)}: {one_line(exc)}") from None
    return conn


def redact(url: str) -> str:
    """The URL as shown in messages (config URLs carry no password; be safe anyway)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        user, _, host = rest.rpartition("@")
        rest = f"{user.split(':', 1)[0]}@{host}"
    return f"{scheme}{sep}{rest}"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def database_role(url: str, timeout: float = CONNECT_TIMEOUT) -> DatabaseRole:
    """Primary or standby (``pg_is_in_recovery()``), and whether it is fenced."""
    try:
        with _connect(url, timeout) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
            ).fetchone()
    except (DatabaseError, psycopg.Error) as exc:
        return DatabaseRole(url, False, error=one_line(exc))
    assert row is not None
    return DatabaseRole(url, True, in_recovery=bool(row[0]), read_only=row[1] == "on")


def promote(url: str, wait_seconds: int = 30) -> bool:
    """Promote the standby at ``url``; True once it accepts writes (idempotent)."""
    with _connect(url, CONNECT_TIMEOUT) as conn:
        try:
            conn.execute(f"SET statement_timeout = {(wait_seconds + 5) * 1000}")
            (in_recovery,) = conn.execute("SELECT pg_is_in_recovery()").fetchone() or (True,)
            if not in_recovery:
                return True  # promoted already
            (done,) = conn.execute(
                "SELECT pg_promote(wait => true, wait_seconds => %s)", (wait_seconds,)
            ).fetchone() or (False,)
        except psycopg.Error as exc:
            raise DatabaseError(f"promoting {redact(url)}: {one_line(exc)}") from None
    return bool(done)


def fence(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Make every new transaction on ``url`` read-only, durably (survives a restart)."""
    with _connect(url, timeout) as conn:
        try:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as exc:
            raise DatabaseError(f"fencing {redact(url)}: {one_line(exc)}") from None
    # the reload is asynchronous (SIGHUP): confirm from a fresh session
    deadline = time.monotonic() + timeout
    while True:
        role = database_role(url, timeout)
        if role.read_only:
            return
        if time.monotonic() > deadline:
            raise DatabaseError(f"fencing {redact(url)}: still not read-only after the reload")
        time.sleep(0.1)


def unfence(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Undo :func:`fence` (used when re-seeding a database as the new primary's standby)."""
    with _connect(url, timeout) as conn:
        try:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as exc:
            raise DatabaseError(f"unfencing {redact(url)}: {one_line(exc)}") from None


def _ensure_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (region text NOT NULL, holder text NOT NULL, "
            "at double precision NOT NULL, old_primary_fenced boolean NOT NULL, "
            "detail text NOT NULL DEFAULT '', PRIMARY KEY (region, at))"
        ).format(sql.Identifier(PROMOTIONS_TABLE))
    )


def record_promotion(url: str, promotion: Promotion, timeout: float = CONNECT_TIMEOUT) -> None:
    """Write ``promotion`` in the database at ``url`` (even if it is fenced read-only)."""
    with _connect(url, timeout) as conn:
        try:
            with conn.transaction():
                # this session's own writes pass a fence set with ALTER SYSTEM
                conn.execute("SET LOCAL transaction_read_only = off")
                _ensure_table(conn)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (region, holder, at, old_primary_fenced, detail) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                    ).format(sql.Identifier(PROMOTIONS_TABLE)),
                    (
                        promotion.region,
                        promotion.holder,
                        promotion.at,
                        promotion.old_primary_fenced,
                        promotion.detail,
                    ),
                )
        except psycopg.Error as exc:
            raise DatabaseError(
                f"recording the promotion in {redact(url)}: {one_line(exc)}"
            ) from None


def read_promotions(url: str, timeout: float = CONNECT_TIMEOUT) -> list[Promotion]:
    """Every promotion recorded in the database at ``url``, oldest first."""
    with _connect(url, timeout) as conn:
        try:
            exists = conn.execute("SELECT to_regclass(%s)", (PROMOTIONS_TABLE,)).fetchone()
            if exists is None or exists[0] is None:
                return []
            rows = conn.execute(
                sql.SQL(
                    "SELECT region, holder, at, old_primary_fenced, detail FROM {} ORDER BY at"
                ).format(sql.Identifier(PROMOTIONS_TABLE))
            ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"reading promotions from {redact(url)}: {one_line(exc)}") from None
    return [Promotion(str(r[0]), str(r[1]), float(r[2]), bool(r[3]), str(r[4])) for r in rows]
