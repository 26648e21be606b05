"""What every ``skylift`` sub-command shares: exit codes, ``-o table|json``, errors.

Kept apart from ``skylift.cli.app`` so that sub-command modules (which ``cli``
imports) can use it without an import cycle, and light enough for the backup
commands' memory budget (typer and the config models only).
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.config import ConfigError, LoadedConfig, load_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


RegionOpt = Annotated[
    str | None,
    typer.Option("--region", help="the region (of a multi-region file) whose controller to ask"),
]


class Output(enum.StrEnum):
    table = "table"
    json = "json"


#: the options most commands share
ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", envvar="SKYLIFT_CONFIG", help="skylift.yaml to use")
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table or json")]


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    """One ``error: ...`` line on stderr, and the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_or_exit(
    path: Path, *, region: str | None = None, one_controller: bool = False
) -> LoadedConfig:
    """The config, or every error with its path and hint on stderr and exit 3.

    ``one_controller``: the command talks to one controller; a multi-region file
    then needs ``--region NAME`` and gives that region's own config (its API,
    token and store).
    """
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if not one_controller:
        return loaded
    regions = list(loaded.config.edged_regions)
    if not regions:
        if region is not None:
            raise fail(f"--region: {path} defines no region with an edge", EXIT_USAGE)
        return loaded
    if region is None or region not in regions:
        raise fail(
            f"{path} defines regions ({', '.join(regions)}): pass --region NAME (one of them)",
            EXIT_USAGE,
        )
    from skylift.regions.config import region_config

    return LoadedConfig(config=region_config(loaded.config, region), path=loaded.path)


def load_regions_or_exit(path: Path) -> LoadedConfig:
    """The config of a multi-region file; exit 2 when it defines no region with an edge."""
    loaded = load_or_exit(path)
    if not loaded.config.edged_regions:
        raise fail(f"{path} defines no region with an edge", EXIT_USAGE)
    return loaded


def emit(data: Any, output: Output, table: str) -> None:
    """Data on stdout: JSON for ``-o json``, else the human table."""
    typer.echo(json.dumps(data, indent=2, default=str) if output == Output.json else table)
