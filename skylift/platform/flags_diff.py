"""Where regions' feature flags differ: a pure comparison and a bounded read of each region.

Each region keeps its flags in its own PostgreSQL (:mod:`skylift.platform.flags`).
``skylift flags diff`` reads them straight from each region's database, the
table the platform itself reads on a cache miss, rather than through each
region's admin API: the database is the source of truth (the API answers from
a Redis cache up to ``flags_ttl`` old), it needs no admin token per region on
the operator's machine, it works while a region's replicas are down, and a
read leaves no ``admin.*`` entry in the region's audit log. The read is
read-only (``default_transaction_read_only``), with a connect timeout and a
statement timeout, so a down or hung region costs seconds and is named.

Only the flag rows cross (names, on/off, rollout, description: operator
configuration, no user data) and only into the operator's terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from skylift.platform.flags import Flag

CONNECT_TIMEOUT = 5
STATEMENT_TIMEOUT_MS = 5000
FIELDS = ("enabled", "rollout", "description")


class FlagsUnreadable(Exception):
    """One region's flags could not be read; the message names the region and the fix."""


@dataclass(frozen=True)
class FlagDifference:
    """One flag that is not the same in every region compared (``None``: the region lacks it)."""

    name: str
    fields: tuple[str, ...]  # "missing", "enabled", "rollout", "description"
    states: dict[str, Flag | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "flag": self.name,
            "differs_in": list(self.fields),
            "regions": {
                region: None
                if flag is None
                else {
                    "enabled": flag.enabled,
                    "rollout": flag.rollout_bp / 100,
                    "description": flag.description,
                }
                for region, flag in self.states.items()
            },
        }


def diff_flags(
    regions: Mapping[str, Mapping[str, Flag]], *, descriptions: bool = False
) -> list[FlagDifference]:
    """The flags that differ between ``regions`` (region -> name -> flag), sorted by name.

    A flag differs when a region lacks it, or when ``enabled`` or the rollout
    differ; the description only counts with ``descriptions``. Pure.
    """
    names = sorted({name for flags in regions.values() for name in flags})
    out: list[FlagDifference] = []
    for name in names:
        states = {region: flags.get(name) for region, flags in regions.items()}
        present = [f for f in states.values() if f is not None]
        fields: list[str] = []
        if len(present) < len(states):
            fields.append("missing")
        if len({f.enabled for f in present}) > 1:
            fields.append("enabled")
        if len({f.rollout_bp for f in present}) > 1:
            fields.append("rollout")
        if descriptions and len({f.description for f in present}) > 1:
            fields.append("description")
        if fields:
            out.append(FlagDifference(name, tuple(fields), states))
    return out


def describe(flag: Flag | None) -> str:
    """A flag's state in a table cell: ``on 30%``, ``off 100%``, ``-`` when missing."""
    if flag is None:
        return "-"
    return f"{'on' if flag.enabled else 'off'} {flag.rollout_bp / 100:g}%"


def table(regions: list[str], differences: list[FlagDifference], *, descriptions: bool) -> str:
    """The human view: one row per differing flag, one column per region."""
    if not differences:
        return f"flags agree in {', '.join(regions)}"
    header = ["FLAG", *regions, "DIFFERS IN"]
    rows = [
        [d.name, *(describe(d.states[r]) for r in regions), ", ".join(d.fields)]
        for d in differences
    ]
    if descriptions:
        for d, row in zip(differences, rows, strict=True):
            if "description" in d.fields:
                texts = {r: f.description for r, f in d.states.items() if f is not None}
                row[-1] += "; " + " | ".join(f"{r}: {t!r}" for r, t in texts.items())
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.append(f"{len(differences)} flag(s) differ between {', '.join(regions)}")
    return "\n".join(lines)


def redact(url: str) -> str:
    """The URL without any password (config URLs carry none; be safe in messages anyway)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        user, _, host = rest.rpartition("@")
        rest = f"{user.split(':', 1)[0]}@{host}"
    return f"{scheme}{sep}{rest}"


def read_flags(region: str, url: str) -> dict[str, Flag]:
    """One region's flags from its database, read-only and bounded in time."""
    scheme, sep, rest = url.partition("://")
    libpq = f"{scheme.split('+', 1)[0]}{sep}{rest}"
    try:
        with psycopg.connect(
            libpq,
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
            "-c default_transaction_read_only=on",
        ) as conn:
            rows = conn.execute(
                "SELECT name, enabled, rollout_bp, description FROM feature_flags ORDER BY name"
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        raise FlagsUnreadable(
            f"region {region}: no feature_flags table in {redact(url)}: run "
            "`skylift platform migrate` against that region's database"
        ) from None
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise FlagsUnreadable(
            f"region {region}: cannot read its flags from {redact(url)}: {detail}"
        ) from None
    return {
        str(name): Flag(str(name), bool(enabled), int(rollout), str(description or ""))
        for name, enabled, rollout, description in rows
    }
