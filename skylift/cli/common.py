"""What every ``skylift`` sub-command shares: exit codes, ``-o table|json``, errors.

Kept apart from ``skylift.cli.app`` so that sub-command modules (which ``cli``
imports) can use it without an import cycle, and light enough for the backup
commands' memory budget (typer and the config models only).
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import typer

from skylift.config import ConfigError, LoadedConfig, load_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


class Output(enum.StrEnum):
    table = "table"
    json = "json"


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    """One ``error: ...`` line on stderr, and the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_or_exit(path: Path) -> LoadedConfig:
    """The config, or every error with its path and hint on stderr and exit 3."""
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CONFIG) from None


def emit(data: Any, output: Output, table: str) -> None:
    """Data on stdout: JSON for ``-o json``, else the human table."""
    typer.echo(json.dumps(data, indent=2, default=str) if output == Output.json else table)
