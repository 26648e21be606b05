"""``skylift plan``: the roadmap for this deployment, from what skylift measured.

Reads the running controller's status (prerequisites), the replicas' processes,
the backup index and load history in the store, and the latest ``skylift
capacity`` result; prints the phase, the capacity limit and the date it is hit,
the next phase and the decision points. ``--html`` writes a self-contained report.
Exit codes: 0 ok, 1 runtime failure (unreadable store, unwritable report), 2 usage,
3 invalid config.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    ConfigOpt,
    Output,
    OutputOpt,
    emit,
    fail,
    load_or_exit,
)
from skylift.plan.roadmap import (
    CapacityFigures,
    PlanInputs,
    build_plan,
    next_phase_hosts,
    price_next_phase,
)


def _months(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, _, hi = value.partition("-")
        low, high = float(lo), float(hi or lo)
    except ValueError:
        raise fail(
            f"--next-phase-months: give N or N-M months, got {value!r}", EXIT_USAGE
        ) from None
    if not 0 <= low <= high:
        raise fail("--next-phase-months: need 0 <= N <= M", EXIT_USAGE)
    return low, high


def _price(
    path: Path,
    instance: str | None,
    next_phase: int,
    peak: float | None,
    capacity: CapacityFigures | None,
    regions: int,
) -> tuple[float, dict[str, Any], str]:
    """The next phase's monthly on-demand cost from a price file (and what it assumed)."""
    from skylift.cost.prices import PriceError, load_prices

    try:
        price_list = load_prices(path)
        region_name, type_name, kind = price_list.find(instance)
    except PriceError as exc:
        raise fail(str(exc), EXIT_FAILURE) from None
    hosts, formula = next_phase_hosts(
        next_phase, peak, None if capacity is None else capacity.max_rps_per_host, regions
    )
    monthly, basis = price_next_phase(
        hosts, formula, kind.on_demand, type_name, region_name, price_list.date.isoformat()
    )
    return monthly, basis, price_list.currency


def plan_command(
    config: ConfigOpt = Path("skylift.yaml"),
    service: Annotated[
        str | None, typer.Option(help="service the plan is about (default: the only one)")
    ] = None,
    metric: Annotated[str, typer.Option(help="stored history metric of traffic")] = "rps",
    next_phase_cost: Annotated[
        float | None,
        typer.Option(help="next phase's monthly cost, given (else priced with --prices)"),
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(help="price file (examples/prices.yaml): price the next phase's hosts"),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option(help="REGION/TYPE or TYPE of the price file (default: its first)"),
    ] = None,
    regions: Annotated[
        int, typer.Option(min=1, help="regions the next phase runs in (the roadmap's: 3)")
    ] = 3,
    currency: Annotated[str, typer.Option(help="currency of the costs")] = "USD",
    budget: Annotated[float | None, typer.Option(help="monthly budget for the next phase")] = None,
    next_phase_months: Annotated[
        str | None, typer.Option(help="override the roadmap's time for the next phase: N-M")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="write the report here")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """The current phase, its prerequisites, the limit and its date, the decision points."""
    from skylift.cli.capacity import latest_result
    from skylift.client import ApiClient, ApiError, ControllerUnreachable
    from skylift.plan import probe
    from skylift.plan.report import render_html
    from skylift.plan.roadmap import current_phase

    loaded = load_or_exit(config)
    names = list(loaded.config.services)
    if service is None:
        if len(names) != 1:
            raise fail(f"give --service, one of: {', '.join(names) or '(none)'}", EXIT_USAGE)
        service = names[0]
    if service not in loaded.config.services:
        raise fail(f"no service {service!r}; have: {', '.join(names)}", EXIT_USAGE)
    months = _months(next_phase_months)
    now = time.time()
    status: dict[str, Any] | None
    with ApiClient(loaded, timeout=10) as api:
        try:
            status = api.get("/api/v1/services")["services"].get(service)
        except (ControllerUnreachable, ApiError):
            status = None
    facts = probe.detect(loaded, service, status)
    try:
        seen = probe.traffic(loaded, service, metric, now)
    except Exception as exc:  # any store failure ends the command with its message
        raise fail(f"cannot read the store {loaded.store_url}: {exc}") from None
    stored = latest_result(loaded.state_dir, service)
    capacity = (
        None
        if stored is None
        else CapacityFigures(
            float(stored["max_rps_per_replica"]),
            float(stored["max_rps_per_host"]),
            int(stored["replicas_per_host"]),
            float(stored["measured_at"]),
        )
    )
    phase = current_phase(facts)
    cost_basis: dict[str, Any] | None = None
    if prices is not None:
        if next_phase_cost is not None:
            raise fail("give --next-phase-cost or --prices, not both", EXIT_USAGE)
        next_phase_cost, cost_basis, currency = _price(
            prices, instance, phase + 1, seen.peak, capacity, regions
        )
    inputs = PlanInputs(
        now=now,
        service=service,
        facts=facts,
        capacity=capacity,
        peak_rps=seen.peak,
        growth=seen.growth,
        history_days=len(seen.peaks),
        next_phase_cost=next_phase_cost,
        cost_basis=cost_basis,
        currency=currency,
        budget=budget,
        months={} if months is None else {phase + 1: months},
    )
    plan = build_plan(inputs)
    if html is not None:
        try:
            html.write_text(render_html(plan, seen.peaks, now), encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write {html}: {exc}") from None
    emit(plan, output, _table(plan))


def _table(plan: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return "unknown" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    lim = plan["limit"]
    lines = [
        f"{plan['service']}: phase {plan['phase']} ({plan['phase_name']})",
        f"limit        {show(lim['rps'])} req/s, hit {show(lim['date'])} "
        f"(95 %: {show(lim['date_early'])} .. {show(lim['date_late'])})"
        + (f"  [{lim['reason']}]" if lim["reason"] else ""),
        f"peak/growth  {show(lim['peak_rps'])} req/s, {show(lim['growth_per_day'])} per day; "
        f"{lim['formula']}",
        "prerequisites:",
    ]
    mark = {True: "met    ", False: "not met", None: "unknown"}
    lines += [
        f"  {mark[p['met']]}  {p['name']:<16}  {p['evidence']}" for p in plan["prerequisites"]
    ]
    nxt = plan.get("next_phase")
    if nxt:
        lines.append(
            f"next: phase {nxt['phase']} ({nxt['name']}), {nxt['months'][0]:g}-"
            f"{nxt['months'][1]:g} months, {show(nxt['monthly_cost'])} {nxt['currency']}/month: "
            + "; ".join(nxt["steps"])
        )
    lines.append("decision points:")
    lines += [
        f"  {d['name']}: {d['signal']} = {show(d['value'])} (threshold {show(d['threshold'])})"
        + ("  ACT" if d["act"] else "")
        for d in plan["decision_points"]
    ]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Mount ``plan`` on the skylift CLI."""
    app.command("plan")(plan_command)
