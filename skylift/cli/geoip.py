"""``skylift geoip update``: rebuild the edge's IP -> country map from an offline dataset.

The dataset is a file the operator downloaded (the CC0
``@ip-location-db/geo-whois-asn-country`` npm tarball or one of its CSVs):
this command never touches the network. A running edge picks the new map
up at its next ``apply`` (a hitless reload). Exit codes: 0 ok, 1 the source
cannot be read, 2 usage (a bad ``--extra``).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Annotated

import typer

from skylift.cli.common import EXIT_USAGE, Output, emit, fail
from skylift.edge.geoip import build_map, parse_extra

geoip_app = typer.Typer(
    help="Offline IP -> country map of the regional edge.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Mount ``skylift geoip ...`` on the skylift CLI."""
    app.add_typer(geoip_app, name="geoip")


@geoip_app.command("update")
def update(
    source: Annotated[
        Path,
        typer.Option(
            "--source", help="start_ip,end_ip,country CSV, or the npm package .tgz holding them"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="map file to write (HAProxy map_ip format)")],
    extra: Annotated[
        list[str] | None,
        typer.Option("--extra", help="CIDR=CC entry for a private network (repeatable)"),
    ] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table or json")] = Output.table,
) -> None:
    """Build the map from SOURCE plus the --extra entries, atomically replacing OUT."""
    try:
        entries = parse_extra(extra or [])
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    try:
        stats = build_map(source, out, entries)
    except (OSError, tarfile.TarError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {source}: {exc}") from None
    data = {
        "out": str(out),
        "rows": stats.rows,
        "cidrs": stats.cidrs,
        "skipped": stats.skipped,
        "extra": stats.extra,
    }
    table = (
        f"wrote {out}: {stats.cidrs} CIDRs from {stats.rows} rows "
        f"({stats.skipped} skipped) + {stats.extra} extra"
    )
    emit(data, output, table)
