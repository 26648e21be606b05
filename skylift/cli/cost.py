"""``skylift prices schema|validate``: the price file that ``--cost`` reads.

Exit codes: 0 ok, 1 unreadable or invalid price file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skylift.cli.common import fail
from skylift.cost.prices import PriceError, json_schema, load_prices

prices_app = typer.Typer(help="price files for `simulate --cost` and `bench --cost`")


@prices_app.command("schema")
def prices_schema() -> None:
    """Print the JSON Schema of a price file (committed as prices.schema.json)."""
    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@prices_app.command("validate")
def prices_validate(file: Annotated[Path, typer.Argument(help="price file (YAML)")]) -> None:
    """Check a price file; every problem names its field and the fix."""
    try:
        prices = load_prices(file)
    except PriceError as exc:
        raise fail(str(exc)) from None
    types = sum(len(r.instances) for r in prices.regions.values())
    typer.echo(f"{file}: valid ({len(prices.regions)} region(s), {types} instance type(s))")


def register(app: typer.Typer) -> None:
    """Mount ``prices`` and ``rightsize`` on the skylift CLI."""
    from skylift.cli.rightsize import rightsize_command

    app.add_typer(prices_app, name="prices")
    app.command("rightsize")(rightsize_command)
