"""Opt-in cross-region replication: names, pairs, SQL and decisions (pure, no I/O).

A user who opts in names a fallback region F in another zone
(``users.fallback_region``, the token's ``xr`` claim). Their row, and only
theirs, is copied from their home region H's primary to F's PostgreSQL
server with logical replication:

- on H (publisher): one publication per possible fallback region,
  ``FOR TABLE users (every column but the secret ones) WHERE (xr_target = 'F')``
  (``xr_target`` = ``coalesce(fallback_region, '')``, kept by a trigger).
  PostgreSQL 15 row filters on UPDATE/DELETE need the filter column in the
  replica identity, and a column list must hold every identity column: the
  identity is a unique index on ``(id, xr_target)`` (migration p0005), so
  ``password_hash`` never leaves the home region. An UPDATE that takes a row
  out of the filter reaches the subscriber as a DELETE: that is how opting
  out removes the copy;
- on F's server (subscriber): a database of its own per home region
  (``skylift_copy_<home>``) holding only the users table, so a copy never
  collides with F's own users (unique e-mail), and one subscription per
  (H -> F) pair.

The I/O side is :mod:`skylift.regions.replication_sync`; this module only
decides, so the unit tests cover every name and statement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from skylift.regions.rules import Topology

PREFIX = "skylift_xr"
COPY_PREFIX = "skylift_copy_"
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
_UNSAFE = re.compile(r"[^a-z0-9_]")

Action = Literal["create", "ok", "enable", "resync"]


class ReplicationError(RuntimeError):
    """A copy cannot be made or kept; the message names the region and the fix."""


def ident(region: str) -> str:
    """A region name as a safe part of a PostgreSQL identifier (``eu-west`` -> ``eu_west``)."""
    return _UNSAFE.sub("_", region.lower())


def publication_name(fallback: str) -> str:
    """On a home region's primary: the rows of users whose fallback is ``fallback``."""
    return _checked(f"{PREFIX}_to_{ident(fallback)}")


def subscription_name(home: str, fallback: str) -> str:
    """On the fallback's server; also the name of the slot on the home's primary."""
    return _checked(f"{PREFIX}_{ident(home)}_to_{ident(fallback)}")


def copy_database(home: str) -> str:
    """The fallback server's database that holds ``home``'s opted-in users."""
    return _checked(f"{COPY_PREFIX}{ident(home)}")


def _checked(name: str) -> str:
    if len(name) > MAX_IDENTIFIER:
        raise ReplicationError(
            f"{name!r} is longer than PostgreSQL's {MAX_IDENTIFIER} bytes: shorten the region names"
        )
    return name


SECRET_COLUMNS = frozenset({"password_hash"})
"""Columns of ``users`` that stay in the home region even for a user who opted in."""
FILTER_COLUMN = "xr_target"
IDENTITY_INDEX = "users_replica_identity"


def row_filter(fallback: str) -> str:
    """The publication's WHERE clause as PostgreSQL prints it back (``pg_publication_tables``)."""
    return f"({FILTER_COLUMN} = {quote_literal(fallback)}::text)"


def published_columns(columns: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """The publisher's ``users`` columns a copy receives: all but :data:`SECRET_COLUMNS`."""
    return [c for c in columns if c[0] not in SECRET_COLUMNS]


def quote_literal(value: str) -> str:
    """A SQL string literal (only for region names, which the config already restricts)."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class Pair:
    """One copy: ``home``'s users who opted in to ``fallback`` (another zone)."""

    home: str
    fallback: str

    @property
    def publication(self) -> str:
        return publication_name(self.fallback)

    @property
    def subscription(self) -> str:
        return subscription_name(self.home, self.fallback)

    @property
    def database(self) -> str:
        return copy_database(self.home)

    @property
    def key(self) -> str:
        return f"{self.home}->{self.fallback}"


def pairs(topology: Topology, *, fallback: str | None = None) -> list[Pair]:
    """Every (home, fallback) pair across zones (those held by ``fallback`` if given).

    Any region of another zone may be named as a fallback (``PUT /me/failover``
    accepts exactly those), so each such pair gets a copy, empty until someone
    opts in. Names that sanitise to the same identifier are refused.
    """
    seen: dict[str, str] = {}
    for name in topology.names:
        other = seen.setdefault(ident(name), name)
        if other != name:
            raise ReplicationError(
                f"regions {other!r} and {name!r} give the same database names "
                f"({ident(name)!r}): rename one of them"
            )
    return [
        Pair(home, target)
        for target in topology.names
        if fallback is None or target == fallback
        for home in topology.names
        if topology.zone_of(home) != topology.zone_of(target)
    ]


def with_database(url: str, database: str) -> str:
    """``url`` naming another database on the same server (libpq form, no driver suffix)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    return urlunsplit((scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def publisher_conninfo(url: str) -> str:
    """The subscription's connection string to the home's primary: the config's URL.

    It carries no password (the config refuses one): the subscriber's server
    reads it from its own ``~/.pgpass`` / ``passfile``, never from skylift.
    """
    return with_database(url, urlsplit(url).path.lstrip("/"))


def owner_url(home_url: str, standby_url: str | None, promoted_to_standby: bool) -> str:
    """Where ``home``'s users live now: its primary, or its promoted in-zone standby."""
    return standby_url if promoted_to_standby and standby_url else home_url


@dataclass(frozen=True, slots=True)
class SubscriptionFacts:
    """What the fallback's server holds of one pair's subscription (None: none)."""

    conninfo: str
    enabled: bool


def decide_subscription(current: SubscriptionFacts | None, conninfo: str) -> Action:
    """The next step for one pair's subscription.

    ``resync`` when it follows another publisher than the home's current owner:
    after ``region promote`` the logical slot did not survive (PostgreSQL 15
    slots are not carried to a promoted physical standby), so the copy is
    emptied and subscribed again with ``copy_data`` from the new primary.
    """
    if current is None:
        return "create"
    if current.conninfo != conninfo:
        return "resync"
    return "ok" if current.enabled else "enable"


# -- SQL (identifiers and literals are quoted by the caller with psycopg.sql) ----------

PUBLISHER_CHECKS = (
    "SELECT current_setting('wal_level') AS wal_level, "
    "(SELECT CASE WHEN c.relreplident = 'i' THEN (SELECT i.relname FROM pg_index x "
    "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisreplident) "
    "ELSE c.relreplident::text END FROM pg_class c WHERE c.oid = to_regclass('users')) "
    "AS identity"
)
PUBLICATION_FILTER = (
    "SELECT rowfilter, attnames FROM pg_publication_tables "
    "WHERE pubname = %s AND schemaname = 'public' AND tablename = 'users'"
)
PUBLICATION_EXISTS = "SELECT 1 FROM pg_publication WHERE pubname = %s"
USERS_COLUMNS = (
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
    "FROM pg_attribute a WHERE a.attrelid = to_regclass('users') AND a.attnum > 0 "
    "AND NOT a.attisdropped ORDER BY a.attnum"
)
SUBSCRIPTION = (
    "SELECT subconninfo, subenabled FROM pg_subscription s JOIN pg_database d "
    "ON d.oid = s.subdbid WHERE s.subname = %s AND d.datname = current_database()"
)


def publisher_problem(home: str, wal_level: str | None, identity: str | None) -> str | None:
    """Why ``home``'s primary cannot publish yet (None: it can)."""
    if wal_level != "logical":
        return (
            f"{home}'s PostgreSQL runs with wal_level={wal_level}: set wal_level = logical "
            "(postgresql.conf, or ALTER SYSTEM SET wal_level = logical) and restart it"
        )
    if identity is None:
        return f"{home}'s database has no users table yet: start its platform (it migrates)"
    if identity != IDENTITY_INDEX:
        return (
            f"{home}'s users table is not REPLICA IDENTITY USING INDEX {IDENTITY_INDEX}: "
            "run the platform's migrations (p0005_copy_columns)"
        )
    return None


def copy_table_sql(columns: list[tuple[str, str, bool]]) -> str:
    """``CREATE TABLE users (...)`` of the copy, from the publisher's own columns."""
    if not columns:
        raise ReplicationError("the publisher's users table has no columns")
    parts = [
        f"{quote_ident(name)} {kind}{' NOT NULL' if not_null else ''}"
        + (" PRIMARY KEY" if name == "id" else "")
        for name, kind, not_null in columns
    ]
    return f"CREATE TABLE IF NOT EXISTS users ({', '.join(parts)})"


def missing_columns_sql(
    wanted: list[tuple[str, str, bool]], present: Mapping[str, str]
) -> list[str]:
    """``ALTER TABLE`` for columns the publisher has and the copy lacks (a later migration).

    Added nullable: rows already copied have no value to give them.
    """
    return [
        f"ALTER TABLE users ADD COLUMN IF NOT EXISTS {quote_ident(name)} {kind}"
        for name, kind, _ in wanted
        if name not in present
    ]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class PairStatus:
    """One pair as ``skylift region replication status`` shows it."""

    home: str
    fallback: str
    state: str  # streaming | copying | disabled | missing | error
    rows: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    publisher: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "home": self.home,
            "fallback": self.fallback,
            "state": self.state,
            "rows": self.rows,
            "lag_bytes": self.lag_bytes,
            "lag_seconds": self.lag_seconds,
            "publisher": self.publisher,
            **({"error": self.error} if self.error else {}),
        }


def subscription_state(
    exists: bool, enabled: bool, worker_running: bool, table_states: list[str]
) -> str:
    """``pg_subscription`` + ``pg_stat_subscription`` + ``pg_subscription_rel`` in one word."""
    if not exists:
        return "missing"
    if not enabled:
        return "disabled"
    if not worker_running:
        return "error"  # enabled, but the apply worker keeps failing (see the server log)
    if not table_states or any(s != "r" for s in table_states):
        return "copying"
    return "streaming"


def status_table(rows: list[PairStatus]) -> str:
    """The human table of ``region replication status``."""
    if not rows:
        return "no cross-zone pair (every region is in one zone)"
    lines = [f"{'pair':<28} {'state':<10} {'rows':>6} {'lag bytes':>10} {'lag s':>7}"]
    for r in rows:
        lines.append(
            f"{r.home + ' -> ' + r.fallback:<28} {r.state:<10} "
            f"{'-' if r.rows is None else r.rows:>6} "
            f"{'-' if r.lag_bytes is None else r.lag_bytes:>10} "
            f"{'-' if r.lag_seconds is None else f'{r.lag_seconds:.1f}':>7}"
            + (f"  {r.error}" if r.error else "")
        )
    return "\n".join(lines)
