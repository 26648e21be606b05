"""Policies x traces: run every pair and say which policy is best where."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from skylift.engine import ScalingPolicy
from skylift.sim.replay import simulate
from skylift.sim.result import SimResult
from skylift.sim.service import ServiceModel, capacity_for_peak
from skylift.sim.trace import Trace, load_trace

BUILTIN = ("oracle", "hpa", "roadmap", "predictive", "scheduled")
PolicyRef = ScalingPolicy | Literal["oracle"]

TRACE_CLOCKS: dict[str, tuple[str, str]] = {
    "wc98": ("1998-04-30T21:30:00+00:00", "Europe/Paris"),
    "nasa": ("1995-07-01T00:00:00-04:00", "America/New_York"),
    "clarknet": ("1995-08-28T00:00:00-04:00", "America/New_York"),
    "nab_elb": ("2014-04-10T00:04:00+00:00", "UTC"),
    "azure_llm_conv": ("2023-11-16T18:15:46+00:00", "UTC"),
    "azure_llm_code": ("2023-11-16T18:17:03+00:00", "UTC"),
}
"""Wall-clock start and the site's time zone of each shared trace (traces/SOURCES.md);
an unknown trace starts at the Unix epoch, in UTC."""
SCHEDULED_FLOOR = 0.4
"""The bench's scheduled policy: hpa plus a floor of 40 % of the peak demand on
weekdays 08:00-20:00 local time, the way an operator would pre-provision office hours."""


def trace_clock(name: str) -> tuple[float, str]:
    """(Unix time of t = 0, IANA zone) of a trace, for the simulator's virtual clock."""
    if name not in TRACE_CLOCKS:
        return 0.0, "UTC"
    start, zone = TRACE_CLOCKS[name]
    return datetime.fromisoformat(start).timestamp(), zone


class PolicyError(ValueError):
    """A policy name or file that is not a valid policy (CLI exit code 3)."""


def preset_policy(name: str, capacity: float, peak_demand: int, timezone: str = "UTC") -> PolicyRef:
    """A built-in policy sized for the run: min 1, max twice the peak demand (at least 10).

    ``scheduled`` is hpa plus an office-hours floor in ``timezone`` (see SCHEDULED_FLOOR).
    """
    if name == "oracle":
        return "oracle"
    sized = {"capacity": capacity, "min": 1, "max": max(10, 2 * peak_demand)}
    if name in ("hpa", "roadmap", "predictive"):
        return ScalingPolicy.model_validate({"preset": name, **sized})
    if name == "scheduled":
        floor = max(1, math.ceil(SCHEDULED_FLOOR * peak_demand))
        office = {"cron": "0 8 * * 1-5", "duration": "12h", "timezone": timezone, "min": floor}
        return ScalingPolicy.model_validate(
            {"preset": "hpa", **sized, "schedules": [{"name": "office hours", **office}]}
        )
    raise PolicyError(f"unknown policy {name!r}: use {', '.join(BUILTIN)} or a YAML file")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Per trace: the safest policy (fewest SLO minutes) and the cheapest one."""

    trace: str
    safest: str
    cheapest: str


def run_bench(
    traces: Sequence[Path],
    policies: Sequence[str],
    *,
    peak: int,
    startup: float,
    interval: float | None = None,
    resolve: Callable[[str, float, int, str], PolicyRef] = preset_policy,
    on_done: Callable[[SimResult], None] | None = None,
) -> list[SimResult]:
    """Replay every trace under every policy; capacity per trace comes from ``peak``."""
    results: list[SimResult] = []
    for path in traces:
        trace: Trace = load_trace(path)
        capacity = capacity_for_peak(trace.peak_rate, peak)
        model = ServiceModel(capacity=capacity, startup=startup)
        peak_demand = model.demand(trace.peak_rate)
        epoch, zone = trace_clock(trace.name)
        for name in policies:
            policy = resolve(name, capacity, peak_demand, zone)
            result = simulate(trace, policy, model, interval=interval, name=name, epoch=epoch)
            results.append(result)
            if on_done is not None:
                on_done(result)
    return results


def verdicts(results: Sequence[SimResult]) -> list[Verdict]:
    """Best policy per trace, the oracle excluded (it cannot be deployed)."""
    by_trace: dict[str, list[SimResult]] = {}
    for r in results:
        if r.policy != "oracle":
            by_trace.setdefault(r.trace, []).append(r)
    out = []
    for trace, rows in by_trace.items():
        safest = min(rows, key=lambda r: (r.slo_violation_minutes, r.cost_ratio))
        cheapest = min(rows, key=lambda r: (r.cost_ratio, r.slo_violation_minutes))
        out.append(Verdict(trace, safest.policy, cheapest.policy))
    return out


def markdown_table(results: Sequence[SimResult]) -> str:
    """The policies x traces table as Markdown (pasteable into docs/benchmarks.md)."""
    head = (
        "| trace | policy | θU % | θO % | τU % | τO % | jitter /h | cost ratio | "
        "replica-h | SLO min | actions |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        ratio = "n/a" if math.isnan(r.cost_ratio) else f"{r.cost_ratio:.2f}"
        lines.append(
            f"| {r.trace} | {r.policy} | {r.theta_u_pct:.2f} | {r.theta_o_pct:.1f} | "
            f"{r.tau_u_pct:.2f} | {r.tau_o_pct:.1f} | {r.jitter_per_hour:.2f} | {ratio} | "
            f"{r.replica_hours:.1f} | {r.slo_violation_minutes:.0f} | {r.actions} |"
        )
    return "\n".join(lines)
