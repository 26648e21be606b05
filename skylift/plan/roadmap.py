"""The roadmap for one deployment, from measured facts: pure.

Phases (the operator's roadmap): 0 one replica; 1 one host, several replicas;
2 several regions; 3 autoscaling across regions. The roadmap's own estimates
(months per phase, cost impact) are defaults the caller can override.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from skylift.plan.growth import DAY, Growth, days_to_limit


@dataclass(frozen=True)
class Phase:
    number: int
    name: str
    months: tuple[float, float]
    """how long the roadmap says the phase usually takes to put in place"""
    cost_impact: str
    steps: tuple[str, ...]
    """what the roadmap says the phase needs"""


PHASES: dict[int, Phase] = {
    0: Phase(0, "one replica", (0.0, 0.0), "baseline", ()),
    1: Phase(
        1,
        "one host, several replicas",
        (2.0, 3.0),
        "+20-30 %",
        ("VPS with CPU/RAM for several replicas", "Swarm or basic Kubernetes", "Redis"),
    ),
    2: Phase(
        2,
        "regions (US, EU, Asia)",
        (6.0, 9.0),
        "+200-300 %",
        (
            "phase 1 stable",
            "budget for several hosts",
            "DNS provider with geo routing",
            "data-residency review",
        ),
    ),
    3: Phase(
        3,
        "autoscaling",
        (9.0, 12.0),
        "variable (optimizable)",
        (
            "phase 2 stable",
            "Kubernetes",
            "monitoring and alerting",
            "load-testing infrastructure",
        ),
    ),
}
MONTH_DAYS = 30.0


@dataclass(frozen=True)
class Prerequisite:
    """Met (True), not met (False), or unknown (None: skylift cannot see it)."""

    name: str
    met: bool | None
    evidence: str


@dataclass(frozen=True)
class DecisionPoint:
    """A roadmap decision with its measured signal; ``value`` None when not measurable."""

    name: str
    signal: str
    value: float | None
    threshold: float | None
    act: bool | None = None
    """True when the value crosses the threshold (time to decide), None when unknown"""
    evidence: str = ""


@dataclass(frozen=True)
class Facts:
    """What was detected from the running deployment."""

    replicas: int
    regions: int
    autoscaling: bool
    prerequisites: Sequence[Prerequisite] = ()


def current_phase(facts: Facts) -> int:
    if facts.regions > 1:
        return 3 if facts.autoscaling else 2
    return 1 if facts.replicas > 1 or facts.autoscaling else 0


@dataclass(frozen=True)
class CapacityFigures:
    """The latest ``skylift capacity`` result for the service the plan is about."""

    max_rps_per_replica: float
    max_rps_per_host: float
    replicas_per_host: int
    measured_at: float


def phase_limit(phase: int, cap: CapacityFigures, regions: int) -> float | None:
    """Req/s the current phase carries: one host's knee (phases 0-1), one host per
    region (phase 2); None for phase 3, whose limit is the budget, not a host."""
    if phase <= 1:
        return cap.max_rps_per_host
    if phase == 2:
        return cap.max_rps_per_host * max(1, regions)
    return None


def _iso_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class PlanInputs:
    now: float
    service: str
    facts: Facts
    capacity: CapacityFigures | None
    peak_rps: float | None
    growth: Growth | None
    history_days: int
    next_phase_cost: float | None = None
    cost_basis: Mapping[str, Any] | None = None
    """how ``next_phase_cost`` was priced (:func:`price_next_phase`), None when given"""
    currency: str = "USD"
    budget: float | None = None
    months: Mapping[int, tuple[float, float]] = field(default_factory=dict)


HOURS_PER_MONTH = 730.0
ROADMAP_REGIONS = 3
"""The roadmap's phase 2 names three regions (us, eu, asia)."""


def next_phase_hosts(
    next_phase: int, peak_rps: float | None, max_rps_per_host: float | None, regions: int
) -> tuple[int, str]:
    """How many application hosts the next phase runs on, and the formula used.

    Phase 1 stays on the one host. Phases 2 and 3 put a pool in each region,
    traffic split evenly, each region with at least one host:
    ``regions x max(1, ceil(peak / (regions x max_rps_per_host)))``. Databases,
    standbys and the edge are not counted (they may share the hosts).
    """
    if next_phase <= 1:
        return 1, "phase 1 keeps the one host: 1"
    if peak_rps is None or not max_rps_per_host:
        return regions, f"{regions} regions x 1 host (no peak or capacity measured)"
    per_region = max(1, math.ceil(peak_rps / (regions * max_rps_per_host)))
    return (
        regions * per_region,
        f"{regions} regions x max(1, ceil({peak_rps:.1f} rps / ({regions} x "
        f"{max_rps_per_host:.1f} rps per host))) = {regions * per_region}",
    )


def price_next_phase(
    hosts: int, formula: str, hourly: float, instance: str, region: str, price_date: str
) -> tuple[float, dict[str, Any]]:
    """Monthly on-demand cost of ``hosts`` instances, with what it assumed."""
    monthly = round(hosts * hourly * HOURS_PER_MONTH, 2)
    return monthly, {
        "hosts": hosts,
        "hosts_formula": formula,
        "instance": instance,
        "price_region": region,
        "hourly": hourly,
        "price_date": price_date,
        "formula": f"{hosts} hosts x {hourly} per hour x {HOURS_PER_MONTH:.0f} h",
    }


def limit_block(inputs: PlanInputs, phase: int) -> dict[str, Any]:
    """``{rps, date, days, date_early, date_late, formula}``: when the limit is hit.

    ``date_early``/``date_late`` use the growth interval's high/low rate.
    """
    out: dict[str, Any] = {
        "rps": None,
        "date": None,
        "days": None,
        "date_early": None,
        "date_late": None,
        "peak_rps": inputs.peak_rps,
        "growth_per_day": None if inputs.growth is None else inputs.growth.rate,
        "formula": "days = ln(capacity / current peak) / g",
        "reason": "",
    }
    if inputs.capacity is None:
        out["reason"] = "no capacity result: run `skylift capacity` first"
        return out
    rps = phase_limit(phase, inputs.capacity, inputs.facts.regions)
    out["rps"] = rps
    if rps is None:
        out["reason"] = "phase 3 has no fixed limit: autoscaling adds hosts"
        return out
    if inputs.peak_rps is None or inputs.peak_rps <= 0:
        out["reason"] = "no stored traffic history to measure a peak"
        return out
    if inputs.growth is None:
        out["reason"] = "fewer than 3 days of history: no growth fit"
        return out

    def when(rate: float) -> tuple[float | None, str | None]:
        assert inputs.peak_rps is not None and rps is not None
        days = days_to_limit(rps, inputs.peak_rps, rate)
        return days, None if days is None else _iso_day(inputs.now + days * DAY)

    days, out["date"] = when(inputs.growth.rate)
    out["days"] = None if days is None else round(days, 1)
    out["date_early"] = when(inputs.growth.high)[1]
    out["date_late"] = when(inputs.growth.low)[1]
    if days is None:
        out["reason"] = "traffic is not growing: the limit is not expected to be hit"
    elif days == 0:
        out["reason"] = "the current peak already reaches the limit"
    return out


def decision_points(
    inputs: PlanInputs, phase: int, limit: Mapping[str, Any]
) -> list[DecisionPoint]:
    """The roadmap's decision points, each with its measured signal (None: not seen)."""
    nxt = PHASES.get(phase + 1)
    lead_months = None if nxt is None else inputs.months.get(nxt.number, nxt.months)[1]
    lead_days = None if lead_months is None else lead_months * MONTH_DAYS
    days = limit["days"]
    points = [
        DecisionPoint(
            "start the next phase",
            "days until the capacity limit (measured) against the longest time the next "
            "phase takes (days)",
            days,
            lead_days,
            None if days is None or lead_days is None else days <= lead_days,
            "" if days is not None else str(limit.get("reason", "")),
        )
    ]
    met = [p.met for p in inputs.facts.prerequisites]
    known = [m for m in met if m is not None]
    points.append(
        DecisionPoint(
            f"review phase {phase} before committing to phase {phase + 1}",
            "share of this phase's detected prerequisites met (%)",
            round(100.0 * sum(known) / len(known), 1) if known else None,
            100.0,
            None if not known else sum(known) == len(known),
            f"{len(met) - len(known)} prerequisite(s) unknown",
        )
    )
    growth = inputs.growth
    points.append(
        DecisionPoint(
            "actual traffic against predictions",
            "measured growth of the daily peak (% per month)",
            None if growth is None else round(100.0 * math.expm1(growth.rate * MONTH_DAYS), 2),
            None,
            None,
            "compare with the growth the roadmap assumed"
            if growth is not None
            else "fewer than 3 days of history",
        )
    )
    points.append(
        DecisionPoint(
            "cost-benefit of the next phase",
            f"next phase monthly cost ({inputs.currency}) against the budget",
            inputs.next_phase_cost,
            inputs.budget,
            None
            if inputs.next_phase_cost is None or inputs.budget is None
            else inputs.next_phase_cost > inputs.budget,
            "from --next-phase-cost until the cost model (issue 16) feeds it",
        )
    )
    for name, signal in (
        ("users far from the region", "share of requests from users > 150 ms away (%)"),
        ("single-region outages", "error budget spent on single-region outages (%)"),
        ("residency needs", "share of signups from countries with residency rules (%)"),
        ("managed services against self-hosted", "operator hours per month on the data tier"),
    ):
        points.append(
            DecisionPoint(name, signal, None, None, None, "skylift does not measure this yet")
        )
    return points


def build_plan(inputs: PlanInputs) -> dict[str, Any]:
    """The plan as JSON-ready data (schema: docs/plan.schema.json)."""
    phase = current_phase(inputs.facts)
    limit = limit_block(inputs, phase)
    nxt = PHASES.get(phase + 1)
    next_phase: dict[str, Any] | None = None
    if nxt is not None:
        lo, hi = inputs.months.get(nxt.number, nxt.months)
        next_phase = {
            "phase": nxt.number,
            "name": nxt.name,
            "months": [lo, hi],
            "cost_impact": nxt.cost_impact,
            "monthly_cost": inputs.next_phase_cost,
            "cost_basis": None if inputs.cost_basis is None else dict(inputs.cost_basis),
            "currency": inputs.currency,
            "steps": list(nxt.steps),
        }
    cap = inputs.capacity
    growth = inputs.growth
    return {
        "service": inputs.service,
        "generated_at": datetime.fromtimestamp(inputs.now, UTC).isoformat(),
        "phase": phase,
        "phase_name": PHASES[phase].name,
        "prerequisites": [asdict(p) for p in inputs.facts.prerequisites],
        "capacity": None if cap is None else asdict(cap),
        "traffic": {
            "peak_rps": inputs.peak_rps,
            "history_days": inputs.history_days,
            "growth": None
            if growth is None
            else {
                "per_day": growth.rate,
                "per_day_low": growth.low,
                "per_day_high": growth.high,
                "doubling_days": growth.doubling_days,
                "days_fitted": growth.days,
            },
        },
        "limit": limit,
        "next_phase": next_phase,
        "decision_points": [asdict(d) for d in decision_points(inputs, phase, limit)],
    }
