"""``skylift region replication status``: the opt-in cross-region copies, per region pair."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import typer

from skylift.cli.common import (
    EXIT_USAGE,
    ConfigOpt,
    Output,
    OutputOpt,
    emit,
    fail,
    load_regions_or_exit,
)

replication_app = typer.Typer(
    help="Opt-in cross-region copies of users' rows (docs/replication.md).",
    no_args_is_help=True,
)


@replication_app.command("status")
def replication_status(
    config: ConfigOpt = Path("skylift.yaml"), output: OutputOpt = Output.table
) -> None:
    """Per home -> fallback pair: state, rows in the copy, lag (bytes, seconds), publisher."""
    from skylift.regions import replication
    from skylift.regions.config import topology_of
    from skylift.regions.replication_sync import pair_status

    loaded = load_regions_or_exit(config)
    cfg = loaded.config
    if cfg.replication is None:
        raise fail(f"{config} has no `replication:` section: copies are off", EXIT_USAGE)
    try:
        pairs = replication.pairs(topology_of(cfg))
    except replication.ReplicationError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    timeout = min(cfg.replication.timeout, 3.0)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(pairs)))) as pool:
        rows = list(pool.map(lambda p: pair_status(cfg, loaded.base_dir, p, timeout), pairs))
    emit(
        {"pairs": {f"{r.home}->{r.fallback}": r.as_dict() for r in rows}},
        output,
        replication.status_table(rows),
    )
