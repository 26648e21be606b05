"""``skylift simulate`` and ``skylift bench``: replay traces through the engine.

Data goes to stdout, progress and errors to stderr. Exit codes: 0 ok,
1 runtime failure (e.g. an unreadable trace), 2 usage, 3 invalid policy.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from skylift.cli.common import Output, fail
from skylift.cost.bench import cost_table, run_cost_bench
from skylift.cost.model import CostError, Rates, choose_instance
from skylift.cost.plan import TOLERANCE, CostPlan, PricedRun, plan_costs
from skylift.cost.prices import PriceError, PriceList, load_prices
from skylift.engine import ScalingPolicy
from skylift.metrics.resources import parse_cpu, parse_memory
from skylift.sim import (
    BUILTIN,
    PolicyError,
    ServiceModel,
    SimResult,
    TraceError,
    capacity_for_peak,
    load_trace,
    markdown_table,
    preset_policy,
    render_chart,
    run_bench,
    simulate,
    verdicts,
)
from skylift.sim.bench import PolicyRef, trace_clock
from skylift.sim.disrupt import SpendCap, SpotInterruptions
from skylift.sim.trace import Trace
from skylift.units import parse_duration, parse_percent

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_POLICY = 3

# The cost options `simulate` and `bench` share (docs/cost.md).
InstanceOpt = Annotated[
    str | None, typer.Option("--instance", help="REGION/TYPE (default: cheapest per replica)")
]
CpuOpt = Annotated[str, typer.Option("--cpu", help="a replica's CPU request")]
MemoryOpt = Annotated[str, typer.Option("--memory", help="a replica's memory request")]
SeedOpt = Annotated[int, typer.Option("--seed", help="spot interruption draws")]
ToleranceOpt = Annotated[
    str, typer.Option("--slo-tolerance", help="extra SLO minutes a mix may add")
]
MonthlyCapOpt = Annotated[
    float | None, typer.Option("--monthly-cap", help="USD per month; show its SLO cost")
]


def _duration(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise fail(f"{flag}: {exc}", EXIT_USAGE) from None


def load_policy_file(path: Path) -> ScalingPolicy:
    """A YAML file holding a ScalingPolicy, at top level or under ``autoscale:``."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    if isinstance(data, dict) and "autoscale" in data:
        data = data["autoscale"]
    try:
        return ScalingPolicy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"invalid policy in {path}:\n{exc}") from exc


def resolve_policy(
    spec: str, capacity: float, peak_demand: int, timezone: str = "UTC"
) -> PolicyRef:
    """A built-in name (oracle, hpa, roadmap, predictive, scheduled) or a YAML policy file."""
    if spec in BUILTIN:
        return preset_policy(spec, capacity, peak_demand, timezone)
    path = Path(spec)
    if path.is_file():
        return load_policy_file(path)
    raise PolicyError(f"unknown policy {spec!r}: use {', '.join(BUILTIN)} or a YAML file path")


MIXES = ("cheapest", "on-demand", "reserved", "spot")


@dataclass(frozen=True, slots=True)
class CostArgs:
    """The ``--cost`` options, parsed once and shared by simulate and bench."""

    prices: PriceList
    instance: str | None
    cpu: float
    memory: int
    seed: int
    tolerance: float
    monthly_cap: float | None


def _cost_args(
    cost: Path | None,
    instance: str | None,
    cpu: str,
    memory: str,
    seed: int,
    tolerance: str,
    monthly_cap: float | None,
) -> CostArgs | None:
    if cost is None:
        return None
    try:
        return CostArgs(
            load_prices(cost),
            instance,
            parse_cpu(cpu),
            parse_memory(memory),
            seed,
            parse_percent(tolerance),
            monthly_cap,
        )
    except PriceError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    except ValueError as exc:
        raise fail(f"--cpu / --memory / --slo-tolerance: {exc}", EXIT_USAGE) from None


def cost_plan(
    args: CostArgs, trace: Trace, base: SimResult, rerun: Callable[..., SimResult]
) -> CostPlan:
    """Price ``base`` under every mix; ``rerun(spot=..., spend_cap=...)`` replays again."""

    def replay(spot: SpotInterruptions | None, cap: SpendCap | None) -> SimResult:
        return rerun(spot=spot, spend_cap=cap)

    try:
        label, instance, k = choose_instance(args.prices, args.instance, args.cpu, args.memory)
        return plan_costs(
            base,
            trace,
            Rates.of(instance),
            k,
            replay,
            instance=label,
            seed=args.seed,
            tolerance=args.tolerance,
            monthly_cap=args.monthly_cap,
        )
    except (CostError, PriceError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def _pick(plan: CostPlan, mix: str) -> PricedRun:
    chosen = {
        "cheapest": plan.cheapest,
        "on-demand": plan.on_demand,
        "reserved": plan.reserved,
        "spot": plan.best_spot,
    }[mix]
    if chosen is None:
        raise fail(f"--mix {mix}: the instance type has no {mix} price", EXIT_USAGE)
    return chosen


def _cost_lines(plan: dict[str, Any]) -> str:
    runs = [plan["on_demand"], *([plan["reserved"]] if plan["reserved"] else []), *plan["spot"]]
    lines = [
        f"cost on {plan['instance']} ({plan['replicas_per_instance']} replicas/instance), "
        f"SLO budget {plan['slo_budget_minutes']} min:"
    ]
    for r in runs:
        m = r["mix"]
        lines.append(
            f"  {m['kind']:<22} reserved {m['reserved_instances']:>3}  spot {m['spot_share']:.0%}"
            f"  USD {r['usd']:>12,.2f}  SLO min {r['slo_violation_minutes']}"
        )
    c = plan["cheapest"]["mix"]
    lines.append(
        f"cheapest at the SLO: {c['kind']} (reserved {c['reserved_instances']}, spot "
        f"{c['spot_share']:.0%}) USD {plan['cheapest']['usd']:,.2f}"
    )
    if "cap" in plan:
        cap = plan["cap"]
        lines.append(
            f"monthly cap USD {cap['monthly_usd']:,.0f}: USD {cap['usd']:,.2f}, "
            f"+{cap['extra_slo_minutes']} SLO min, {cap['capped_hours']} h held at the floor"
        )
    return "\n".join(lines)


def _table(result: SimResult) -> str:
    rows = result.to_dict()
    width = max(len(k) for k in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items())


def simulate_command(
    trace: Annotated[Path, typer.Option("--trace", help="CSV trace 't,requests'")],
    peak: Annotated[
        int | None, typer.Option("--peak", min=1, help="size capacity so the peak needs N replicas")
    ] = None,
    capacity: Annotated[
        float | None, typer.Option("--capacity", help="requests/s per replica at the SLO")
    ] = None,
    startup: Annotated[str, typer.Option("--startup", help="provisioning + warm-up")] = "60s",
    interval: Annotated[
        str | None, typer.Option("--interval", help="decision interval (default: the policy's)")
    ] = None,
    window: Annotated[str, typer.Option("--window", help="metric averaging window")] = "60s",
    policy: Annotated[
        str,
        typer.Option(
            "--policy", help="oracle, hpa, roadmap, predictive, scheduled or a policy YAML file"
        ),
    ] = "hpa",
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="wall-clock time of t=0 (ISO 8601) for schedules, events and forecast "
            "seasons; default: the known start of a shared trace, else 1970-01-01 UTC",
        ),
    ] = None,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
    timeline: Annotated[
        Path | None, typer.Option("--timeline", help="write t,demand,desired,ready,paid CSV")
    ] = None,
    chart: Annotated[Path | None, typer.Option("--chart", help="write an HTML chart")] = None,
    cost: Annotated[
        Path | None, typer.Option("--cost", help="price file: add money (docs/cost.md)")
    ] = None,
    instance: InstanceOpt = None,
    cpu: CpuOpt = "0.5",
    memory: MemoryOpt = "1Gi",
    mix: Annotated[
        str, typer.Option("--mix", help="run reported: cheapest, on-demand, reserved, spot")
    ] = "cheapest",
    seed: SeedOpt = 0,
    slo_tolerance: ToleranceOpt = f"{TOLERANCE:.0%}",
    monthly_cap: MonthlyCapOpt = None,
) -> None:
    """Replay a trace against one policy and print its elasticity scores (and money)."""
    if mix not in MIXES:
        raise fail(f"--mix {mix!r}: use one of {', '.join(MIXES)}", EXIT_USAGE)
    if cost is not None and policy == "oracle":
        raise fail("--cost prices a deployable policy; the oracle cannot be bought", EXIT_USAGE)
    pricing = _cost_args(cost, instance, cpu, memory, seed, slo_tolerance, monthly_cap)
    if (peak is None) == (capacity is None):
        raise fail("give exactly one of --peak N or --capacity RPS", EXIT_USAGE)
    if capacity is not None and capacity <= 0:
        raise fail("--capacity must be greater than zero", EXIT_USAGE)
    startup_s = _duration(startup, "--startup") or 0.0
    interval_s = _duration(interval, "--interval")
    window_s = _duration(window, "--window") or 0.0
    if window_s <= 0:
        raise fail("--window must be longer than zero, e.g. 60s", EXIT_USAGE)
    try:
        data = load_trace(trace)
    except TraceError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    try:
        cap = capacity if capacity is not None else capacity_for_peak(data.peak_rate, peak or 1)
    except ValueError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    model = ServiceModel(capacity=cap, startup=startup_s)
    epoch, zone = trace_clock(data.name)
    if start is not None:
        try:
            moment = datetime.fromisoformat(start)
        except ValueError:
            raise fail(f"--start: {start!r} is not an ISO 8601 time", EXIT_USAGE) from None
        epoch = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    try:
        ref = resolve_policy(policy, cap, model.demand(data.peak_rate), zone)
    except PolicyError as exc:
        raise fail(str(exc), EXIT_POLICY) from None
    name = Path(policy).stem if policy not in BUILTIN else policy
    try:
        result = simulate(
            data, ref, model, interval=interval_s, window=window_s, name=name, epoch=epoch
        )
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    payload = result.to_dict()
    if pricing is not None:
        plan = cost_plan(
            pricing,
            data,
            result,
            functools.partial(
                simulate,
                data,
                ref,
                model,
                interval=interval_s,
                window=window_s,
                name=name,
                epoch=epoch,
            ),
        )
        chosen = _pick(plan, mix)
        result = chosen.result or result
        payload = result.to_dict()
        payload["cost"] = chosen.to_dict()
        payload["cost_plan"] = plan.to_dict()
    try:
        if timeline is not None:
            timeline.write_text(result.timeline.to_csv(), encoding="utf-8")
        if chart is not None:
            chart.write_text(render_chart(result), encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write output: {exc}", EXIT_RUNTIME) from None
    if output is Output.json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        typer.echo(_table(result))
        if pricing is not None:
            typer.echo(_cost_lines(payload["cost_plan"]))


def bench_command(
    traces: Annotated[Path, typer.Option("--traces", help="folder of <name>.csv traces")],
    policies: Annotated[
        str, typer.Option("--policies", help="comma-separated names or YAML files")
    ] = "oracle,hpa,roadmap,predictive,scheduled",
    peak: Annotated[int, typer.Option("--peak", min=1, help="replicas the peak needs")] = 50,
    startup: Annotated[str, typer.Option("--startup", help="provisioning + warm-up")] = "60s",
    interval: Annotated[str | None, typer.Option("--interval")] = None,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
    cost: Annotated[
        Path | None, typer.Option("--cost", help="price file: money per trace and mix")
    ] = None,
    instance: InstanceOpt = None,
    cpu: CpuOpt = "0.5",
    memory: MemoryOpt = "1Gi",
    seed: SeedOpt = 0,
    slo_tolerance: ToleranceOpt = f"{TOLERANCE:.0%}",
    monthly_cap: MonthlyCapOpt = None,
) -> None:
    """Replay every trace under every policy; print the table and the best per trace.

    With ``--cost``: price each trace x policy (oracle skipped) as on-demand only,
    reserved + on-demand and + spot, and the cheapest mix that keeps the SLO.
    """
    pricing = _cost_args(cost, instance, cpu, memory, seed, slo_tolerance, monthly_cap)
    if not traces.is_dir():
        raise fail(f"--traces {traces} is not a folder", EXIT_USAGE)
    files = sorted(traces.glob("*.csv"))
    if not files:
        raise fail(f"no *.csv traces in {traces}", EXIT_USAGE)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names:
        raise fail("--policies is empty", EXIT_USAGE)
    startup_s = _duration(startup, "--startup") or 0.0
    interval_s = _duration(interval, "--interval")
    for name in names:  # fail fast on a bad policy, before any long run
        try:
            resolve_policy(name, 1.0, 1)
        except PolicyError as exc:
            raise fail(str(exc), EXIT_POLICY) from None
    if pricing is not None:
        _bench_cost(pricing, files, names, peak, startup_s, interval_s, output)
        return
    total = len(files) * len(names)
    try:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("replaying", total=total)
                results = run_bench(
                    files,
                    names,
                    peak=peak,
                    startup=startup_s,
                    interval=interval_s,
                    resolve=resolve_policy,
                    on_done=lambda _r: bar.advance(task),
                )
        else:
            results = run_bench(
                files,
                names,
                peak=peak,
                startup=startup_s,
                interval=interval_s,
                resolve=resolve_policy,
            )
    except TraceError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    except PolicyError as exc:
        raise fail(str(exc), EXIT_POLICY) from None
    best = verdicts(results)
    if output is Output.json:
        payload = {
            "results": [r.to_dict() for r in results],
            "best": {v.trace: {"safest": v.safest, "cheapest": v.cheapest} for v in best},
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(markdown_table(results))
    typer.echo("")
    for v in best:
        typer.echo(f"{v.trace}: safest {v.safest}, cheapest {v.cheapest}")


def _bench_cost(
    pricing: CostArgs,
    files: list[Path],
    names: list[str],
    peak: int,
    startup: float,
    interval: float | None,
    output: Output,
) -> None:
    try:
        label, instance, k = choose_instance(
            pricing.prices, pricing.instance, pricing.cpu, pricing.memory
        )
        rows = run_cost_bench(
            files,
            names,
            peak=peak,
            startup=startup,
            interval=interval,
            resolve=resolve_policy,
            rates=Rates.of(instance),
            per_instance=k,
            instance=label,
            seed=pricing.seed,
            tolerance=pricing.tolerance,
            monthly_cap=pricing.monthly_cap,
            on_done=lambda r: typer.echo(f"priced {r.trace} / {r.policy}", err=True),
        )
    except TraceError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    except PolicyError as exc:
        raise fail(str(exc), EXIT_POLICY) from None
    except (CostError, PriceError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    prices = pricing.prices
    if output is Output.json:
        payload = {
            "prices": {"date": prices.date.isoformat(), "source": prices.source},
            "results": [{"trace": r.trace, "policy": r.policy, **r.plan.to_dict()} for r in rows],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"Prices of {prices.date} ({prices.currency}); instance {label}, {k} replicas each.")
    typer.echo(cost_table(rows))


def register(app: typer.Typer) -> None:
    """Mount ``simulate`` and ``bench`` on the skylift CLI."""
    app.command("simulate")(simulate_command)
    app.command("bench")(bench_command)
