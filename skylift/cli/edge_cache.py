"""``skylift region cache purge --region NAME|all``: empty the edges' caches now.

HAProxy 2.6 cannot drop cache entries at run time; a reload starts the edge
with an empty cache. ``up --region`` (which adopts a running edge) and any edge
config change already reload; this is for content that changed without either
(docs/edge-cache.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from skylift.cli.common import EXIT_FAILURE, EXIT_USAGE, Output, emit, fail, load_or_exit

cache_app = typer.Typer(help="The edges' cache of declared-public paths.", no_args_is_help=True)


def register(region_app: typer.Typer) -> None:
    """Mount ``cache`` under ``skylift region``."""
    region_app.add_typer(cache_app, name="cache")


@cache_app.command("purge")
def cache_purge(
    region: Annotated[str, typer.Option("--region", help="a region's name, or 'all'")],
    config: Annotated[
        Path,
        typer.Option("--config", "-c", envvar="SKYLIFT_CONFIG", help="skylift.yaml to use"),
    ] = Path("skylift.yaml"),
    output: Annotated[Output, typer.Option("--output", "-o", help="table or json")] = Output.table,
) -> None:
    """Empty the cache of the selected regions' edges (a hitless reload of each)."""
    from skylift.cli.regions_run import selected
    from skylift.edge.runner import Edge, EdgeError
    from skylift.regions.config import edge_spec

    loaded = load_or_exit(config)
    if loaded.config.edge.cache is None:
        raise fail(f"{config} has no edge.cache: the edges cache nothing", EXIT_USAGE)
    names = selected(loaded, region)
    binary = loaded.config.haproxy.binary

    async def purge(name: str) -> str:
        # state_dir is all the purge reads: the running config is reloaded unchanged
        spec = edge_spec(loaded.config, name, loaded.base_dir)
        try:
            done = await Edge(spec, haproxy_binary=binary).purge_cache()
        except (EdgeError, OSError) as exc:
            return f"error: {exc}"
        return "purged" if done else "no edge running (nothing cached)"

    async def purge_all() -> list[str]:
        return list(await asyncio.gather(*(purge(n) for n in names)))

    results = dict(zip(names, asyncio.run(purge_all()), strict=True))
    emit({"regions": results}, output, "\n".join(f"region {n}: {r}" for n, r in results.items()))
    if any(r.startswith("error") for r in results.values()):
        raise typer.Exit(EXIT_FAILURE)


__all__ = ["register"]
