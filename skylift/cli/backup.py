"""``skylift backup``: regional PostgreSQL backups to Telegram.

Data goes to stdout (``-o json`` for machines), logs to stderr. Exit codes:
0 ok, 1 runtime failure (dump, upload, integrity, a failed verify),
2 usage (unknown region, missing backup section), 3 invalid config.
Secrets (bot token, keys) never appear in any output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import (
    EXIT_USAGE,
    ConfigOpt,
    Output,
    OutputOpt,
    emit,
    fail,
    load_or_exit,
)
from skylift.config import LoadedConfig

backup_app = typer.Typer(
    help="Regional backups to Telegram: streamed, encrypted, chunked, verified, restorable.",
    no_args_is_help=True,
)

RegionOpt = Annotated[str, typer.Option("--region", "-r", help="the region (from `regions:`)")]


def register(app: typer.Typer) -> None:
    """Mount ``skylift backup ...`` on the skylift CLI."""
    app.add_typer(backup_app, name="backup")


@contextmanager
def _errors() -> Iterator[None]:
    """Backup errors become one clear line on stderr and an exit code; no traceback."""
    from skylift.backup.context import UnknownRegion
    from skylift.backup.errors import BackupError

    try:
        yield
    except UnknownRegion as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except BackupError as exc:
        raise fail(str(exc)) from None


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _index(loaded: LoadedConfig) -> Any:
    from skylift.backup.index import BackupIndex

    return BackupIndex.open(loaded.store_url, loaded.state_dir)


def _work_dir(loaded: LoadedConfig) -> Path:
    path = loaded.state_dir / "backup-tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


@backup_app.command("keygen")
def keygen(region: RegionOpt, config: ConfigOpt = Path("skylift.yaml")) -> None:
    """Create the region's key at its key_file (mode 0600); never overwrites a key."""
    from skylift.backup.context import RegionContext
    from skylift.backup.keys import RegionKey

    loaded = load_or_exit(config)
    with _errors():
        ctx = RegionContext.from_config(loaded, region)
        path = ctx.key_path
        if path.exists():
            raise fail(f"{path} already exists: a region key is never overwritten")
        key = RegionKey.generate(region)
        key.write_new(path)
    typer.echo(f"created region {region!r} key {key.fingerprint} at {path} (mode 0600)")
    typer.echo("keep a copy offline: without it no backup of this region can be restored", err=True)


@backup_app.command("run")
def run(
    ctx_: typer.Context,
    region: RegionOpt,
    config: ConfigOpt = Path("skylift.yaml"),
    fresh: Annotated[bool, typer.Option(help="do not resume an interrupted backup")] = False,
    prune: Annotated[bool, typer.Option(help="apply the retention policy afterwards")] = True,
    output: OutputOpt = Output.table,
    parallel: Annotated[
        int, typer.Option(min=1, help="--region all: regions backed up at once")
    ] = 4,
    timeout: Annotated[
        float, typer.Option(help="--region all: seconds one region may take before it is killed")
    ] = 6 * 3600.0,
) -> None:
    """Dump the region's database and upload it, encrypted, to the region's chat.

    ``--region all``: every region with a backup section, each to its own chat with its
    own key, in parallel; a failed region does not stop the others (exit 1 if any failed).
    """
    from skylift.cli import backup_all

    if region == "all":
        backup_all.run_all_regions(
            ctx_, config, output, fresh=fresh, prune=prune, parallel=parallel, timeout=timeout
        )
        return
    backup_all.check_region_token(load_or_exit(config), region)
    _hand_over(ctx_, config, region, "run", output, fresh=fresh, prune=prune)


def _hand_over(
    typer_ctx: typer.Context,
    config: Path,
    region: str,
    command: str,
    output: Output,
    **params: Any,
) -> None:
    """Run ``command`` for ``region`` in the lean worker: exec into it, or in-process
    under a test runner. Config and region errors are reported here, before the hand-over."""
    from skylift.backup import worker
    from skylift.backup.context import RegionContext

    loaded = load_or_exit(config)
    with _errors():
        ctx = RegionContext.from_config(loaded, region)
    root = typer_ctx.find_root().params
    job = {
        "command": command,
        "context": ctx.to_job(),
        "store_url": loaded.store_url,
        "state_dir": str(loaded.state_dir),
        "output": output.value,
        "log_level": root.get("log_level", "info"),
        "log_json": bool(root.get("log_json")),
        **params,
    }
    if _can_exec():
        # replace this process (and its ~60 MB of CLI imports) with the lean worker
        sys.stdout.flush()
        sys.stderr.flush()
        env = {**os.environ, worker.JOB_ENV: json.dumps(job), **worker.MALLOC_ENV}
        argv = [sys.executable, "-m", "skylift.backup.worker"]
        os.execve(sys.executable, argv, env)  # noqa: S606
    with _errors():
        data, table, code = worker.run_job(job)
    emit(data, output, table)
    if code:
        raise typer.Exit(code)


def _can_exec() -> bool:
    """Only a real process may be replaced (not a test runner capturing output in-process)."""
    try:
        sys.stdout.fileno()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return os.environ.get("SKYLIFT_BACKUP_IN_PROCESS") != "1"


@backup_app.command("list")
def list_backups(
    config: ConfigOpt = Path("skylift.yaml"),
    region: Annotated[str | None, typer.Option("--region", "-r", help="only this region")] = None,
    all_: Annotated[bool, typer.Option("--all", help="include failed and expired")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """List the backups in the index (live ones unless --all)."""
    loaded = load_or_exit(config)
    if region is not None and region not in loaded.config.regions:
        raise fail(f"region {region!r} is not in {loaded.path}", EXIT_USAGE)
    with _errors(), _index(loaded) as index:
        records = index.list(region, status=None if all_ else "complete")
    rows = [r.summary() for r in records]
    lines = [f"{'ID':<34} {'STATUS':<9} {'CREATED':<21} {'PARTS':>5} {'BYTES':>12}"]
    lines += [
        f"{r['id']:<34} {r['status']:<9} {_when(r['created_at']):<21} {r['parts']:>5} "
        f"{r['bytes'] or 0:>12}"
        for r in rows
    ]
    emit({"backups": rows}, output, "\n".join(lines))


@backup_app.command("restore")
def restore_cmd(
    ctx_: typer.Context,
    region: RegionOpt,
    target: Annotated[str, typer.Option(help="postgresql://... database to restore into")],
    backup: Annotated[str, typer.Option("--backup", "-b", help="backup id or 'latest'")] = "latest",
    config: ConfigOpt = Path("skylift.yaml"),
    force: Annotated[bool, typer.Option(help="allow restoring over the source database")] = False,
    from_telegram: Annotated[
        bool, typer.Option(help="find the manifest through the chat's pinned message, no index")
    ] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Download, check every SHA-256, decrypt and pg_restore a backup into --target."""
    _hand_over(
        ctx_,
        config,
        region,
        "restore",
        output,
        backup=None if backup == "latest" else backup,
        target=target,
        force=force,
        from_telegram=from_telegram,
    )


@backup_app.command("verify")
def verify_cmd(
    ctx_: typer.Context,
    region: RegionOpt,
    backup: Annotated[str, typer.Option("--backup", "-b", help="backup id or 'latest'")] = "latest",
    config: ConfigOpt = Path("skylift.yaml"),
    scratch_url: Annotated[
        str | None, typer.Option(help="scratch database (default: a new one on the source server)")
    ] = None,
    keep: Annotated[bool, typer.Option(help="keep the scratch database")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Restore drill: restore into a scratch database, compare tables with the manifest."""
    _hand_over(
        ctx_,
        config,
        region,
        "verify",
        output,
        backup=None if backup == "latest" else backup,
        scratch_url=scratch_url,
        keep=keep,
    )


@backup_app.command("prune")
def prune_cmd(
    region: RegionOpt,
    config: ConfigOpt = Path("skylift.yaml"),
    dry_run: Annotated[bool, typer.Option(help="only show what would expire")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Apply the region's retention policy now."""
    from skylift.backup import retention
    from skylift.backup.context import RegionContext

    loaded = load_or_exit(config)
    with _errors():
        ctx = RegionContext.from_config(loaded, region)
        with ctx.bot() as bot, _index(loaded) as index:
            expired = retention.apply(
                index,
                bot,
                region,
                ctx.chat_id,
                ctx.backup.retention,
                now=time.time,
                dry_run=dry_run,
            )
    emit(
        {"expired": [e.as_dict() for e in expired], "dry_run": dry_run},
        output,
        "\n".join(f"expired {e.id}" for e in expired) or "nothing to expire",
    )


@backup_app.command("schedule")
def schedule_cmd(
    config: ConfigOpt = Path("skylift.yaml"),
    once: Annotated[bool, typer.Option(help="run what is due now, then exit")] = False,
    every: Annotated[float, typer.Option(help="seconds between checks")] = 30.0,
) -> None:
    """Run each region's backups on its cron schedule (UTC), with retention after each.

    A failed backup is retried with back-off until one succeeds; any error is
    logged and recorded as an event, and the scheduler keeps running. Only one
    scheduler may run per region (a second one exits 1 saying who holds it).
    """
    from skylift.backup.schedule import Scheduler, schedule_lock, store_events

    loaded = load_or_exit(config)
    scheduler = Scheduler(loaded, _work_dir(loaded), events=store_events(loaded))
    with _errors(), schedule_lock(loaded.state_dir, list(scheduler.regions())):
        try:
            while True:
                for line in scheduler.tick(time.time()):
                    typer.echo(line)
                if once:
                    return
                time.sleep(every)
        finally:
            scheduler.close()
