"""``skylift rightsize -c FILE [SERVICE]``: requests and an instance type from usage.

Usage per replica comes from ``--samples CSV`` (``t,cpu,memory``: cores and
bytes per replica, e.g. exported from a trace run or a monitoring system) or,
without it, from the CPU and memory history in the config's store (fractions of
the current request, times the request). ``--capacity RPS --need RPS`` adds the
vertical-or-horizontal advice for a single host. Exit codes: 0 ok, 1 runtime
failure (unreadable store, samples or prices), 2 usage, 3 invalid config.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import EXIT_USAGE, ConfigOpt, Output, fail, load_or_exit
from skylift.cost.model import CostError
from skylift.cost.prices import PriceError, load_prices
from skylift.cost.rightsize import Rightsize, rightsize, vertical_or_horizontal
from skylift.metrics.resources import Resources, format_cpu, format_memory, parse_memory
from skylift.units import parse_duration, parse_percent


def read_samples(path: Path) -> tuple[list[float], list[float]]:
    """(cores, bytes) per replica from a ``t,cpu,memory`` CSV."""
    cpu: list[float] = []
    memory: list[float] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read samples {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"cpu", "memory"} <= set(reader.fieldnames):
        raise fail(f"{path}: the header must be 't,cpu,memory' (cores, bytes per replica)")
    for number, row in enumerate(reader, start=2):
        try:
            cpu.append(float(row["cpu"]))
            memory.append(float(parse_memory(row["memory"])))
        except (TypeError, ValueError) as exc:
            raise fail(f"{path}:{number}: {exc}") from None
    return cpu, memory


def _from_store(config: Path, service: str | None, window: float) -> tuple[str, Any, Any]:
    from skylift.store import Store

    loaded = load_or_exit(config)
    services = loaded.config.services
    name = service or next(iter(services))
    spec = services.get(name)
    if spec is None:
        raise fail(f"no service {name!r}; have: {', '.join(services)}", EXIT_USAGE)
    request = spec.request or Resources()
    if request.cpu is None or request.memory is None:
        raise fail(
            f"service {name!r} has no cpu and memory request to scale the stored fractions "
            "by: add `resources: {cpu: 0.5, memory: 512Mi}` or pass --samples CSV",
            EXIT_USAGE,
        )
    since = time.time() - window
    try:
        with Store.open(loaded.store_url, state_dir=loaded.state_dir) as store:
            cpu = store.history.load(name, "cpu", since=since)
            memory = store.history.load(name, "memory", since=since)
    except Exception as exc:  # any store failure ends the command with its message
        raise fail(f"cannot read the store {loaded.store_url}: {exc}") from None
    if not cpu or not memory:
        raise fail(
            f"the store holds no cpu and memory history for {name!r} in the window (the "
            "controller keeps the history of the metric it forecasts): pass --samples CSV",
        )
    cores = [b.mean * request.cpu for b in cpu]
    sizes = [b.mean * request.memory for b in memory]
    return name, cores, sizes


def rightsize_command(
    service: Annotated[str | None, typer.Argument(help="service (default: the first)")] = None,
    config: ConfigOpt = Path("skylift.yaml"),
    prices: Annotated[Path, typer.Option("--prices", help="price file")] = Path(
        "examples/prices.yaml"
    ),
    samples: Annotated[
        Path | None, typer.Option("--samples", help="t,cpu,memory CSV per replica")
    ] = None,
    window: Annotated[str, typer.Option("--window", help="history to size from")] = "7d",
    region: Annotated[str | None, typer.Option("--region", help="price-file region")] = None,
    headroom: Annotated[str, typer.Option("--headroom", help="on top of the p95")] = "15%",
    capacity: Annotated[
        float | None, typer.Option("--capacity", help="requests/s today's host serves")
    ] = None,
    need: Annotated[float | None, typer.Option("--need", help="requests/s to serve")] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="today's host REGION/TYPE")
    ] = None,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="replicas serving --capacity today")
    ] = 1,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
) -> None:
    """Recommend requests and an instance type from p95 usage; vertical or horizontal."""
    try:
        price_list = load_prices(prices)
    except PriceError as exc:
        raise fail(str(exc)) from None
    try:
        window_s = parse_duration(window)
        extra = parse_percent(headroom)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if samples is not None:
        name = service or samples.stem
        cores, sizes = read_samples(samples)
    else:
        name, cores, sizes = _from_store(config, service, window_s)
    payload: dict[str, Any] = {"service": name}
    try:
        advice = rightsize(cores, sizes, price_list, region=region, headroom=extra)
        payload["rightsize"] = _advice(advice)
        if (capacity is None) != (need is None) or (capacity is not None and instance is None):
            raise fail("vertical or horizontal needs --capacity, --need and --instance", 2)
        if capacity is not None and need is not None and instance is not None:
            payload["vertical_or_horizontal"] = [
                {
                    "way": o.way,
                    "instance": o.instance,
                    "hosts": o.hosts,
                    "capacity_rps": round(o.capacity_rps, 1),
                    "usd_month": round(o.usd_month, 2),
                    "note": o.note,
                }
                for o in vertical_or_horizontal(
                    price_list,
                    instance,
                    capacity,
                    need,
                    replicas=replicas,
                    request=(advice.cpu, advice.memory),
                )
            ]
    except (CostError, PriceError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if output is Output.json:
        typer.echo(json.dumps(payload, indent=2))
        return
    r = payload["rightsize"]
    typer.echo(
        f"{name}: p95 {r['cpu_p95']} cores, {r['memory_p95']} over {r['samples']} samples -> "
        f"resources: {{cpu: {r['cpu']}, memory: {r['memory']}}} (prices of {price_list.date})"
    )
    for f in r["instances"][:5]:
        typer.echo(
            f"  {f['instance']:<28} {f['replicas_per_instance']:>3} replicas/instance  "
            f"USD {f['usd_per_replica_month']:>8.2f} per replica-month"
        )
    for o in payload.get("vertical_or_horizontal", []):
        typer.echo(
            f"  {o['way']:<10} {o['hosts']} x {o['instance']:<22} {o['capacity_rps']:>8} rps  "
            f"USD {o['usd_month']:>8.2f}/month  {o['note']}"
        )


def _advice(advice: Rightsize) -> dict[str, Any]:
    return {
        "cpu": format_cpu(advice.cpu),
        "memory": format_memory(advice.memory),
        "cpu_p95": round(advice.cpu_p95, 3),
        "memory_p95": f"{advice.memory_p95 / 2**20:.0f}Mi",
        "samples": advice.samples,
        "instances": [
            {
                "instance": f.instance,
                "replicas_per_instance": f.per_instance,
                "usd_per_replica_month": round(f.usd_per_replica_month, 2),
            }
            for f in advice.fits
        ],
    }
