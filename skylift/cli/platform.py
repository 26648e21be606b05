"""``skylift platform``: serve a replica, migrate, verify the audit chain, rotate keys.

Settings come from ``SKYLIFT_PLATFORM_*`` variables (see
:mod:`skylift.platform.settings`); the database URL may also be given with
``--database-url`` for the offline commands. Exit codes as for ``skylift``:
0 ok, 1 failure (a broken audit chain), 2 usage error.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from skylift.logs import configure_logging

platform_app = typer.Typer(
    help="The reference platform: auth, audit log, feature flags.", no_args_is_help=True
)
audit_app = typer.Typer(help="The region's hash-chained audit log.", no_args_is_help=True)
keys_app = typer.Typer(help="The region's JWT signing keys.", no_args_is_help=True)
platform_app.add_typer(audit_app, name="audit")
platform_app.add_typer(keys_app, name="keys")

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SKYLIFT_PLATFORM_DATABASE_URL",
        help="PostgreSQL URL (default: $SKYLIFT_PLATFORM_DATABASE_URL)",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``skylift platform ...`` to ``app``."""
    app.add_typer(platform_app, name="platform")


def platform_main() -> None:
    """Entry point of ``python -m skylift.platform`` (logs configured here, not by skylift)."""
    configure_logging(os.environ.get("SKYLIFT_PLATFORM_LOG_LEVEL", "info"))
    platform_app(prog_name="python -m skylift.platform")


def _database_url(given: str | None) -> str:
    if given:
        return given
    path = os.environ.get("SKYLIFT_PLATFORM_DATABASE_URL_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    typer.echo(
        "error: no database: pass --database-url or set SKYLIFT_PLATFORM_DATABASE_URL(_FILE)",
        err=True,
    )
    raise typer.Exit(2)


@platform_app.command()
def serve(
    port: Annotated[int, typer.Option(help="port to listen on")],
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
) -> None:
    """Run one replica until SIGTERM (the command a service's backend runs)."""
    from skylift.platform.serve import serve as run
    from skylift.platform.settings import PlatformSettings, SettingsError

    try:
        settings = PlatformSettings.from_env()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    run(settings, host, port)


@platform_app.command()
def migrate(database_url: DatabaseOpt = None) -> None:
    """Bring the platform database to the newest schema."""
    from skylift.platform.migrate import upgrade

    upgrade(_database_url(database_url))
    typer.echo("platform database is at the newest schema")


@audit_app.command("verify")
def audit_verify(
    database_url: DatabaseOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
    expect_head: Annotated[
        str | None,
        typer.Option(
            help="a head hash printed by an earlier verify (kept elsewhere): it must still be "
            "in the chain, which catches records cut off the end",
        ),
    ] = None,
    all_regions: Annotated[
        bool,
        typer.Option(
            "--all-regions",
            help="run the aggregator (in the aggregating region): every opted-in region "
            "verifies its own chain; exit 1 naming a region that fails or moved backwards",
        ),
    ] = False,
    region: Annotated[
        list[str] | None, typer.Option("--region", help="with --all-regions: only these regions")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds per call to a region")] = 30.0,
) -> None:
    """Check the whole hash chain; exit 1 naming every edited, removed or reordered record."""
    if all_regions:
        from skylift.cli.audit_regions import output_of, run_verify_command

        run_verify_command(
            _database_url(database_url),
            regions=region or [],
            timeout=timeout,
            output=output_of(output),
        )
    from skylift.platform.audit_verify import verify_database

    result = asyncio.run(verify_database(_database_url(database_url), expect_head))
    if output == "json":
        typer.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "head": result.head,
                    "problems": result.problems,
                },
                indent=2,
            )
        )
    elif result.ok:
        typer.echo(f"audit chain ok: {result.records} records, head {result.head}")
    else:
        typer.echo(f"audit chain BROKEN: {len(result.problems)} problem(s) in {result.records}")
        for problem in result.problems:
            typer.echo(f"  {problem}")
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("query")
def audit_query(
    all_regions: Annotated[
        bool, typer.Option("--all-regions", help="query the aggregator (required for now)")
    ] = False,
    event: Annotated[list[str] | None, typer.Option("--event", help="event type (repeat)")] = None,
    region: Annotated[list[str] | None, typer.Option("--region", help="region (repeat)")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time, exclusive")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    pull: Annotated[
        bool, typer.Option(help="collect what is new from every region before answering")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds per call to a region")] = 30.0,
    database_url: DatabaseOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """Audit metadata across regions (time, region, event, pseudonymous actor, chain hash)."""
    from skylift.cli.audit_regions import output_of, run_query_command
    from skylift.cli.common import EXIT_USAGE, fail

    if not all_regions:
        raise fail(
            "query answers across regions: pass --all-regions (one region's own log: "
            "GET /admin/audit on its platform)",
            EXIT_USAGE,
        )
    run_query_command(
        _database_url(database_url),
        regions=region or [],
        events=event or [],
        since=since,
        until=until,
        limit=limit,
        pull=pull,
        timeout=timeout,
        output=output_of(output),
    )


@keys_app.command("rotate")
def keys_rotate(
    key_dir: Annotated[
        Path, typer.Option(envvar="SKYLIFT_PLATFORM_KEY_DIR", help="the region's key directory")
    ],
) -> None:
    """Make a new signing key; the previous one stays in the JWKS until it is rotated out."""
    from skylift.platform.keys import rotate

    key = rotate(key_dir)
    typer.echo(f"new signing key {key.kid}")
