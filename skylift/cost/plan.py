"""Price a replay under every mix and pick the cheapest that keeps the SLO.

The mixes: on-demand only; a reserved baseline (searched, ``model.reserved_search``)
plus on-demand; and that plus spot for ``SPOT_SHARES`` of the burst, each
re-simulated with seeded interruptions because reclaimed replicas cost SLO
minutes. "Keeps the SLO" means at most ``tolerance`` more SLO-violation minutes
than on-demand only (reserved instances change the bill, not the replicas, so
only spot can break it). A monthly cap re-runs the chosen mix with the fleet held
at its reservation once a month's budget is spent, to show what the cap costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skylift.cost.model import (
    Baseline,
    Cost,
    Mix,
    Rates,
    fleet_hours,
    price,
    reserved_search,
    usd_per_hour,
)
from skylift.sim.disrupt import SpendCap, SpotInterruptions
from skylift.sim.result import SimResult
from skylift.sim.trace import Trace

SPOT_SHARES = (0.25, 0.5, 0.75, 1.0)
"""Shares of the burst put on spot; each is one more replay."""
TOLERANCE = 0.10
"""A mix keeps the SLO with at most 10 % more SLO-violation minutes than on-demand only."""

ON_DEMAND, RESERVED, SPOT = "on-demand", "reserved + on-demand", "+ spot"
"""The three kinds of mix the bench compares."""

Replay = Callable[[SpotInterruptions | None, SpendCap | None], SimResult]
"""Re-run the same trace and policy with interruptions and / or a cap (the caller's
``simulate`` with everything else fixed)."""


@dataclass(frozen=True, slots=True)
class PricedRun:
    """One mix: its money, and the SLO minutes of the replay that priced it."""

    kind: str
    mix: Mix
    cost: Cost
    slo_minutes: float
    replica_hours: float
    interruptions: int = 0
    baseline: Baseline | None = None
    result: SimResult | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """``cost`` JSON plus the mix that produced it."""
        out = self.cost.to_dict()
        out["mix"] = {
            "kind": self.kind,
            "reserved_instances": self.mix.reserved,
            "spot_share": self.mix.spot_share,
        }
        out["slo_violation_minutes"] = round(self.slo_minutes, 2)
        out["replica_hours"] = round(self.replica_hours, 3)
        if self.mix.spot_share:
            out["spot_interruptions"] = self.interruptions
        if self.baseline is not None:
            out["reserved_above_pct"] = round(self.baseline.above_pct, 2)
            out["reserved_breakeven_pct"] = round(self.baseline.breakeven_pct, 2)
        return out


@dataclass(frozen=True, slots=True)
class CapReport:
    """What a monthly cap did: the capped run's money and its extra SLO minutes."""

    monthly_usd: float
    run: PricedRun
    extra_slo_minutes: float
    capped_hours: float

    def to_dict(self) -> dict[str, Any]:
        """JSON of ``cost_plan.cap``."""
        return {
            "monthly_usd": self.monthly_usd,
            "usd": round(self.run.cost.usd, 2),
            "slo_violation_minutes": round(self.run.slo_minutes, 2),
            "extra_slo_minutes": round(self.extra_slo_minutes, 2),
            "capped_hours": round(self.capped_hours, 2),
        }


@dataclass(frozen=True, slots=True)
class CostPlan:
    """Every mix priced; ``cheapest`` is the cheapest with SLO minutes <= ``slo_budget``."""

    instance: str
    per_instance: int
    slo_budget: float
    on_demand: PricedRun
    reserved: PricedRun | None
    spot: list[PricedRun]
    cheapest: PricedRun
    cap: CapReport | None = None

    @property
    def best_spot(self) -> PricedRun | None:
        """The cheapest spot mix that keeps the SLO, else the one with fewest SLO minutes."""
        keep = [r for r in self.spot if r.slo_minutes <= self.slo_budget]
        if keep:
            return min(keep, key=lambda r: r.cost.usd)
        return min(self.spot, key=lambda r: r.slo_minutes) if self.spot else None

    def to_dict(self) -> dict[str, Any]:
        """JSON of ``cost_plan``."""
        return {
            "instance": self.instance,
            "replicas_per_instance": self.per_instance,
            "slo_budget_minutes": round(self.slo_budget, 2),
            "on_demand": self.on_demand.to_dict(),
            "reserved": self.reserved.to_dict() if self.reserved else None,
            "spot": [r.to_dict() for r in self.spot],
            "cheapest": self.cheapest.to_dict(),
            **({"cap": self.cap.to_dict()} if self.cap else {}),
        }


def _priced(
    result: SimResult, trace: Trace, k: int, rates: Rates, mix: Mix, kind: str
) -> PricedRun:
    rows = fleet_hours(result.timeline.t, result.timeline.paid, trace.step, k)
    return PricedRun(
        kind,
        mix,
        price(rows, rates, mix),
        result.slo_violation_minutes,
        result.replica_hours,
        result.spot_interruptions or 0,
        result=result,
    )


def plan_costs(
    base: SimResult,
    trace: Trace,
    rates: Rates,
    k: int,
    replay: Replay,
    *,
    instance: str = "",
    seed: int = 0,
    tolerance: float = TOLERANCE,
    shares: tuple[float, ...] = SPOT_SHARES,
    monthly_cap: float | None = None,
) -> CostPlan:
    """Price ``base`` (the on-demand replay) and every mix; search the cheapest at the SLO."""
    rows = fleet_hours(base.timeline.t, base.timeline.paid, trace.step, k)
    on_demand = _priced(base, trace, k, rates, Mix(), ON_DEMAND)
    budget = base.slo_violation_minutes * (1.0 + tolerance)
    reserved: PricedRun | None = None
    if rates.reserved is not None:
        line = reserved_search(rows, rates.reserved, rates.on_demand)
        mix = Mix(reserved=line.instances)
        run = _priced(base, trace, k, rates, mix, RESERVED)
        reserved = PricedRun(
            RESERVED, mix, run.cost, run.slo_minutes, run.replica_hours, baseline=line, result=base
        )
    spot: list[PricedRun] = []
    if rates.spot is not None:
        for share in shares:
            line = (
                reserved_search(rows, rates.reserved, rates.burst(share))
                if rates.reserved is not None
                else Baseline(0, 100.0, 0.0)
            )
            mix = Mix(reserved=line.instances, spot_share=share)
            interrupts = SpotInterruptions(
                line.instances, share, k, rates.interruption_rate, seed=seed, notice=rates.notice
            )
            run = _priced(replay(interrupts, None), trace, k, rates, mix, SPOT)
            spot.append(
                PricedRun(
                    SPOT,
                    mix,
                    run.cost,
                    run.slo_minutes,
                    run.replica_hours,
                    run.interruptions,
                    line,
                    run.result,
                )
            )
    candidates = [on_demand, *([reserved] if reserved else []), *spot]
    keep = [r for r in candidates if r.slo_minutes <= budget]
    cheapest = min(keep, key=lambda r: r.cost.usd)
    cap = None
    if monthly_cap is not None:
        cap = _capped(cheapest, trace, rates, k, replay, monthly_cap, seed)
    return CostPlan(instance, k, budget, on_demand, reserved, spot, cheapest, cap)


def _capped(
    chosen: PricedRun,
    trace: Trace,
    rates: Rates,
    k: int,
    replay: Replay,
    monthly_usd: float,
    seed: int,
) -> CapReport:
    mix = chosen.mix
    meter = SpendCap(
        monthly_usd,
        floor=mix.reserved * k,
        usd_per_hour=lambda n: usd_per_hour(n, k, rates, mix),
        start=float(trace.times[0]),
    )
    interrupts = (
        SpotInterruptions(
            mix.reserved, mix.spot_share, k, rates.interruption_rate, seed=seed, notice=rates.notice
        )
        if mix.spot_share
        else None
    )
    result = replay(interrupts, meter)
    run = _priced(result, trace, k, rates, mix, chosen.kind)
    extra = run.slo_minutes - chosen.slo_minutes
    return CapReport(monthly_usd, run, extra, meter.capped_seconds / 3600.0)
