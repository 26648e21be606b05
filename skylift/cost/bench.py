"""``skylift bench --cost``: money per trace for each kind of mix, and the cheapest at the SLO."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from skylift.cost.model import Rates
from skylift.cost.plan import CostPlan, plan_costs
from skylift.sim.bench import PolicyRef, trace_clock
from skylift.sim.disrupt import SpendCap, SpotInterruptions
from skylift.sim.replay import simulate
from skylift.sim.result import SimResult
from skylift.sim.service import ServiceModel, capacity_for_peak
from skylift.sim.trace import load_trace


@dataclass(frozen=True, slots=True)
class CostRow:
    """One trace under one policy, priced every way."""

    trace: str
    policy: str
    plan: CostPlan


def run_cost_bench(
    traces: Sequence[Path],
    policies: Sequence[str],
    *,
    peak: int,
    startup: float,
    interval: float | None,
    resolve: Callable[[str, float, int, str], PolicyRef],
    rates: Rates,
    per_instance: int,
    instance: str,
    seed: int = 0,
    tolerance: float = 0.10,
    monthly_cap: float | None = None,
    on_done: Callable[[CostRow], None] | None = None,
) -> list[CostRow]:
    """Replay and price every trace x policy (the oracle is skipped: it cannot be bought)."""
    rows = []
    for path in traces:
        trace = load_trace(path)
        capacity = capacity_for_peak(trace.peak_rate, peak)
        model = ServiceModel(capacity=capacity, startup=startup)
        epoch, zone = trace_clock(trace.name)
        for name in policies:
            if name == "oracle":
                continue
            policy = resolve(name, capacity, model.demand(trace.peak_rate), zone)
            rerun = functools.partial(
                simulate, trace, policy, model, interval=interval, name=name, epoch=epoch
            )

            def replay(
                spot: SpotInterruptions | None,
                cap: SpendCap | None,
                rerun: Callable[..., SimResult] = rerun,
            ) -> SimResult:
                return rerun(spot=spot, spend_cap=cap)

            plan = plan_costs(
                rerun(),
                trace,
                rates,
                per_instance,
                replay,
                instance=instance,
                seed=seed,
                tolerance=tolerance,
                monthly_cap=monthly_cap,
            )
            row = CostRow(trace.name, name, plan)
            rows.append(row)
            if on_done is not None:
                on_done(row)
    return rows


def cost_table(rows: Sequence[CostRow]) -> str:
    """Markdown: USD per trace for each kind, SLO minutes, and the cheapest mix at the SLO."""
    head = (
        "| trace | policy | on-demand USD | reserved + on-demand USD (R, held %) | "
        "+ spot USD (R, spot share) | SLO min od / spot | cheapest at the SLO | USD | saved |"
    )
    lines = [head, "|" + "---|" * 9]
    for row in rows:
        p = row.plan
        od = p.on_demand
        res = (
            f"{p.reserved.cost.usd:,.2f} ({p.reserved.mix.reserved}, "
            f"{p.reserved.baseline.above_pct:.0f} %)"
            if p.reserved and p.reserved.baseline
            else "n/a"
        )
        spot = p.best_spot
        spot_cell = (
            f"{spot.cost.usd:,.2f} ({spot.mix.reserved}, {spot.mix.spot_share:.0%})"
            + ("" if spot.slo_minutes <= p.slo_budget else " ✗")
            if spot
            else "n/a"
        )
        spot_slo = f"{spot.slo_minutes:.0f}" if spot else "n/a"
        c = p.cheapest
        saved = 1.0 - c.cost.usd / od.cost.usd if od.cost.usd else 0.0
        lines.append(
            f"| {row.trace} | {row.policy} | {od.cost.usd:,.2f} | {res} | {spot_cell} | "
            f"{od.slo_minutes:.0f} / {spot_slo} | {c.kind} (R {c.mix.reserved}, spot "
            f"{c.mix.spot_share:.0%}) | {c.cost.usd:,.2f} | {saved:.0%} |"
        )
    return "\n".join(lines)
