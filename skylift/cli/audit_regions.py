"""``skylift platform audit query|verify --all-regions``: the aggregator, run from the CLI.

Run in the aggregating region with that region's platform settings (the same
``SKYLIFT_PLATFORM_*`` variables its replicas get: database URL, region,
topology file, directory key file). Each run pulls what is new from every
opted-in region (and, for ``verify``, each region's verdict on its own chain),
stores it in the aggregating region's PostgreSQL, then answers from there.
Exit codes as for ``skylift``: 0 ok, 1 a region's chain is broken, moved
backwards or could not be asked, 2 usage, 3 aggregation not configured here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from skylift.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Output, emit, fail


@dataclass(frozen=True)
class AggregatorEnv:
    region: str
    topology_file: Path
    directory_key_file: Path


def aggregator_env(environ: Mapping[str, str]) -> AggregatorEnv:
    """Where the aggregator is and what it holds, from the platform's own variables."""

    def first(*names: str) -> str | None:
        return next((environ[n] for n in names if environ.get(n)), None)

    region = first("SKYLIFT_PLATFORM_REGION", "SKYLIFT_REGION")
    topology = first("SKYLIFT_PLATFORM_TOPOLOGY_FILE", "SKYLIFT_REGION_TOPOLOGY_FILE")
    key = first("SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE")
    missing = [
        name
        for name, value in (
            ("SKYLIFT_PLATFORM_REGION", region),
            ("SKYLIFT_PLATFORM_TOPOLOGY_FILE", topology),
            ("SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE", key),
        )
        if value is None
    ]
    if missing:
        raise fail(
            f"--all-regions runs the aggregator: set {', '.join(missing)} as for the "
            "aggregating region's platform",
            EXIT_USAGE,
        )
    assert region is not None and topology is not None and key is not None
    return AggregatorEnv(region, Path(topology), Path(key))


def output_of(value: str) -> Output:
    try:
        return Output(value)
    except ValueError:
        raise fail(f"--output: {value!r} is neither 'table' nor 'json'", EXIT_USAGE) from None


def parse_time(raw: str | None, option: str) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise fail(
            f"{option}: {raw!r} is not an ISO 8601 time (2026-01-31T12:00:00Z)", EXIT_USAGE
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _run(
    database_url: str,
    env: AggregatorEnv,
    only: Sequence[str],
    *,
    pull: bool,
    verify: bool,
    call_timeout: float,
    query: Any = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    import psycopg
    from psycopg.rows import dict_row

    from skylift.platform import peers
    from skylift.platform.audit_aggregate import AggregationOff, Puller, pull_all
    from skylift.platform.audit_aggregate import query as run_query
    from skylift.platform.audit_aggregate import sources as opted_in
    from skylift.platform.db import libpq_url
    from skylift.platform.topology import TopologyError, load_topology

    try:
        regions = load_topology(env.topology_file)
        names = opted_in(regions, env.region, only)
        key = env.directory_key_file.read_bytes().strip()
    except (TopologyError, AggregationOff, OSError) as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    checks: list[Any] = []
    rows: list[dict[str, Any]] = []
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url),
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=10,
        options="-c statement_timeout=30000",  # no statement of the aggregator hangs the CLI
    ) as conn:
        if pull:
            async with peers.http_client(call_timeout) as client:
                puller = Puller(env.region, regions, peers.peer_key(key), client)
                checks = await pull_all(conn, puller, names, verify)
        if query is not None:
            rows = await run_query(conn, query)
    return checks, rows


def run_query_command(
    database_url: str,
    *,
    regions: list[str],
    events: list[str],
    since: str | None,
    until: str | None,
    limit: int,
    pull: bool,
    timeout: float,
    output: Output,
) -> None:
    from skylift.platform.audit_aggregate import Query

    env = aggregator_env(os.environ)
    q = Query(
        regions=tuple(regions),
        events=tuple(events),
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        limit=limit,
    )
    checks, rows = asyncio.run(
        _run(database_url, env, regions, pull=pull, verify=False, call_timeout=timeout, query=q)
    )
    failed = [c for c in checks if not c.ok]
    for check in failed:  # what was stored before still answers; say what is missing
        typer.echo(f"warning: {check.region}: {'; '.join(check.problems)}", err=True)
    lines = [f"{'TIME':32} {'REGION':12} {'SEQ':>6} {'EVENT':28} ACTOR"]
    lines += [
        f"{r['ts']:32} {r['region']:12} {r['seq']:>6} {r['event']:28} {r['actor'] or '-'}"
        for r in rows
    ]
    warnings = [{"region": c.region, "problems": c.problems} for c in failed]
    emit({"records": rows, "warnings": warnings}, output, "\n".join(lines))
    raise typer.Exit(EXIT_OK)


def run_verify_command(
    database_url: str, *, regions: list[str], timeout: float, output: Output
) -> None:
    env = aggregator_env(os.environ)
    checks, _ = asyncio.run(
        _run(database_url, env, regions, pull=True, verify=True, call_timeout=timeout)
    )
    ok = all(c.ok for c in checks)
    lines = []
    for c in checks:
        if c.ok:
            lines.append(f"{c.region}: audit chain ok: {c.records} records, head {c.head_hash}")
            continue
        where = f" first bad record {c.first_bad_seq}" if c.first_bad_seq is not None else ""
        state = "NOT CHECKED" if not c.reachable else "BROKEN"
        lines.append(f"{c.region}: audit chain {state}:{where}")
        lines += [f"  {p}" for p in c.problems]
    emit({"ok": ok, "regions": [c.to_json() for c in checks]}, output, "\n".join(lines))
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILURE)
