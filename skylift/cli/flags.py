"""``skylift flags``: feature flags seen across regions.

``skylift flags diff`` reads every region's flags from its own database (see
:mod:`skylift.platform.flags_diff` for why the database and not the admin
API) and shows only the flags that differ. Exit codes, like ``diff``'s but
kept apart from skylift's own: 0 all regions agree, 4 they differ, 1 a
region's flags could not be read (the message names the region), 2 usage,
3 invalid config.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer

from skylift.cli.common import EXIT_FAILURE, EXIT_USAGE, ConfigOpt, Output, emit, fail, load_or_exit
from skylift.config import LoadedConfig

EXIT_FLAGS_DIFFER = 4

flags_app = typer.Typer(help="Feature flags across regions.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Mount ``skylift flags ...`` on the skylift CLI."""
    app.add_typer(flags_app, name="flags")


def flags_database(loaded: LoadedConfig, name: str) -> str:
    """Where region ``name``'s flags live now: its database, or its standby once promoted."""
    from skylift.regions.promotion import read_local_promotions, region_state_dir

    region = loaded.config.regions[name]
    if region.standby is not None:
        state_dir = region_state_dir(loaded.config, loaded.base_dir, name)
        if name in read_local_promotions(state_dir):
            return region.standby.database_url
    return region.database_url


@flags_app.command("diff")
def diff(
    config: ConfigOpt = Path("skylift.yaml"),
    region: Annotated[
        list[str] | None,
        typer.Option("--region", "-r", help="compare only these regions (repeat; default: all)"),
    ] = None,
    descriptions: Annotated[
        bool, typer.Option("--descriptions", help="a differing description counts too")
    ] = False,
    output: Annotated[Output, typer.Option("--output", "-o", help="table or json")] = Output.table,
) -> None:
    """Show the flags that differ between regions (missing, on/off, rollout); exit 4 if any."""
    from skylift.platform.flags_diff import FlagsUnreadable, diff_flags, read_flags, redact, table

    loaded = load_or_exit(config)
    known = list(loaded.config.regions)
    names = list(dict.fromkeys(region)) if region else known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise fail(
            f"--region {', '.join(unknown)}: not in {loaded.path} (regions: {', '.join(known)})",
            EXIT_USAGE,
        )
    if len(names) < 2:
        raise fail("flags diff compares at least two regions", EXIT_USAGE)
    from skylift.regions.promotion import PromotionError

    try:
        urls = {n: flags_database(loaded, n) for n in names}
    except PromotionError as exc:
        raise fail(str(exc), EXIT_FAILURE) from None

    def read(name: str) -> object:
        try:
            return read_flags(name, urls[name])
        except FlagsUnreadable as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        found = dict(zip(names, pool.map(read, names), strict=True))
    errors = [str(v) for v in found.values() if isinstance(v, FlagsUnreadable)]
    if errors:
        raise fail("; ".join(errors), EXIT_FAILURE)
    flags = {n: v for n, v in found.items() if isinstance(v, dict)}
    differences = diff_flags(flags, descriptions=descriptions)
    emit(
        {
            "regions": {n: {"database": redact(urls[n]), "flags": len(flags[n])} for n in names},
            "same": not differences,
            "differences": [d.as_dict() for d in differences],
        },
        output,
        table(names, differences, descriptions=descriptions),
    )
    if differences:
        raise typer.Exit(EXIT_FLAGS_DIFFER)
