"""``skylift backup run --region all`` and the token check of ``--region NAME``.

Exit codes: 0 every region backed up, 1 at least one region failed (the
others still ran; the summary names each region's result), 3 two regions
share a bot token or a chat (nothing was run).
"""

from __future__ import annotations

from pathlib import Path

import typer

from skylift.cli.common import EXIT_CONFIG, EXIT_FAILURE, Output, emit, fail, load_or_exit
from skylift.config import LoadedConfig


def run_all_regions(
    typer_ctx: typer.Context,
    config: Path,
    output: Output,
    *,
    fresh: bool,
    prune: bool,
    parallel: int,
    timeout: float,
) -> None:
    """Back up every region with a backup section, each to its own chat, in parallel."""
    from skylift.backup.all_regions import (
        Job,
        RegionOutcome,
        SharedBackupTarget,
        run_all,
        summary,
    )
    from skylift.backup.errors import BackupError

    loaded = load_or_exit(config)
    root = typer_ctx.find_root().params
    job = Job(
        store_url=loaded.store_url,
        state_dir=str(loaded.state_dir),
        log_level=str(root.get("log_level", "info")),
        log_json=bool(root.get("log_json")),
        fresh=fresh,
        prune=prune,
    )

    def progress(outcome: RegionOutcome) -> None:
        verdict = "done" if outcome.ok else f"FAILED: {outcome.error}"
        typer.echo(f"{outcome.region}: {verdict}", err=True)

    try:
        outcomes = run_all(loaded, job, parallel=parallel, timeout=timeout, on_done=progress)
    except SharedBackupTarget as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    except BackupError as exc:
        raise fail(str(exc)) from None
    data, table = summary(outcomes)
    emit(data, output, table)
    if not data["ok"]:
        raise typer.Exit(EXIT_FAILURE)


def check_region_token(loaded: LoadedConfig, region: str) -> None:
    """Exit 3 if ``region``'s bot token is another region's (compared by digest, never shown)."""
    from skylift.backup.all_regions import SharedBackupTarget, check_region_apart

    try:
        check_region_apart(loaded, region)
    except SharedBackupTarget as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
