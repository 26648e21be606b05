"""``skylift region status|promote|switchover``: the regions' databases and their standbys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
    load_regions_or_exit,
)

region_app = typer.Typer(
    help="Regions' databases: role, in-zone standby, promotion.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    from skylift.cli.edge_cache import register as register_cache
    from skylift.cli.replication import replication_app

    register_cache(region_app)
    region_app.add_typer(replication_app, name="replication")
    app.add_typer(region_app, name="region")


@region_app.command("status")
def region_status(
    config: ConfigOpt = Path("skylift.yaml"), output: OutputOpt = Output.table
) -> None:
    """Per region: zone, edge, healthy, database role, who holds its standby, promoted."""
    from skylift.cli.regions_run import gather_status
    from skylift.regions import database
    from skylift.regions.promotion import read_local_promotions, region_state_dir

    loaded = load_regions_or_exit(config)
    cfg = loaded.config
    urls = {r.database_url for r in cfg.edged_regions.values()} | {
        r.standby.database_url for r in cfg.edged_regions.values() if r.standby is not None
    }
    with ThreadPoolExecutor(max_workers=len(urls) + 1) as pool:
        overview = pool.submit(gather_status, loaded)
        roles = dict(zip(urls, pool.map(database.database_role, urls), strict=True))
        status = overview.result()["regions"]
    regions: dict[str, Any] = {}
    from skylift.regions.status import database_entry

    for name, region in cfg.edged_regions.items():
        entry = status[name]
        promotion = None
        if region.standby is not None:
            holder_dir = region_state_dir(cfg, loaded.base_dir, region.standby.region)
            found = read_local_promotions(holder_dir).get(name)
            promotion = found.as_dict() if found is not None else None
        regions[name] = {
            "zone": entry["zone"],
            "edge": entry["edge"],
            "healthy": entry["healthy"],
            **({"error": entry["error"]} if entry.get("error") else {}),
            "database": database_entry(
                primary=roles[region.database_url].as_dict(),
                standby=roles[region.standby.database_url].as_dict() if region.standby else None,
                holder=region.standby.region if region.standby else None,
                promotion=promotion,
            ),
        }
    lines = []
    for name, r in regions.items():
        db = r["database"]
        fenced = ", fenced" if db["fenced"] else ""
        standby = (
            f"standby in {db['standby']['region']} ({db['standby']['role']})"
            if db["standby"]
            else "no standby"
        )
        promoted = ", PROMOTED" if db["promoted"] else ""
        health = "healthy" if r["healthy"] else "UNHEALTHY"
        lines.append(
            f"{name:<12} zone {r['zone']:<6} edge {r['edge']:<16} {health:<9} database "
            f"{db['role']}{fenced}, {standby}{promoted}"
        )
    emit({"regions": regions}, output, "\n".join(lines))


@region_app.command("promote")
def region_promote(
    region: Annotated[str, typer.Argument(help="the region whose standby becomes its primary")],
    config: ConfigOpt = Path("skylift.yaml"),
    wait: Annotated[int, typer.Option(help="seconds to wait for the promotion")] = 30,
    output: OutputOpt = Output.table,
) -> None:
    """Fence REGION's primary, promote its in-zone standby, and record the promotion."""
    from skylift.regions.database import DatabaseError
    from skylift.regions.promotion import PromotionError, promote_region

    loaded = load_or_exit(config)
    say = (lambda text: typer.echo(text, err=True)) if output == Output.table else (lambda _: None)
    try:
        report = promote_region(loaded.config, loaded.base_dir, region, wait_seconds=wait, say=say)
    except (PromotionError, DatabaseError) as exc:
        raise fail(str(exc)) from None
    fenced = (
        "the old primary is fenced read-only"
        if report.old_primary_fenced
        else f"the old primary did not answer ({report.fence_error}); it fences itself when "
        "its controller starts"
    )
    what = "was already promoted" if report.already else "is promoted"
    emit(
        report.as_dict(),
        output,
        f"{region}'s standby in {report.holder} {what}: it is now {region}'s primary; {fenced}; "
        f"recorded in {', '.join(report.recorded_in)}",
    )


@region_app.command("switchover")
def region_switchover(
    region: Annotated[str, typer.Argument(help="the region to move back to its own database")],
    config: ConfigOpt = Path("skylift.yaml"),
) -> None:
    """Not yet automated: prints the manual steps (re-seed the old primary first)."""
    loaded = load_or_exit(config)
    r = loaded.config.regions.get(region)
    holder = r.standby.region if r is not None and r.standby is not None else "<holder>"
    raise fail(
        "`region switchover` is not automated yet. By hand: (1) keep "
        f"{region}'s old primary fenced; (2) re-seed it as a standby of the promoted "
        f"database in {holder} (pg_basebackup -R from it); (3) stop writes in {holder}, "
        f"wait until the new standby has replayed everything, promote it; (4) re-seed "
        f"{holder}'s copy as the standby again and remove {region} from promotions.json in "
        "both regions' state directories",
        EXIT_USAGE,
    )
