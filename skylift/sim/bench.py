"""Policies x traces: run every pair and say which policy is best where."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from skylift.engine import ScalingPolicy
from skylift.sim.replay import simulate
from skylift.sim.result import SimResult
from skylift.sim.service import ServiceModel, capacity_for_peak
from skylift.sim.trace import Trace, load_trace

BUILTIN = ("oracle", "hpa", "roadmap")
PolicyRef = ScalingPolicy | Literal["oracle"]


class PolicyError(ValueError):
    """A policy name or file that is not a valid policy (CLI exit code 3)."""


def preset_policy(name: str, capacity: float, peak_demand: int) -> PolicyRef:
    """A built-in policy sized for the run: min 1, max twice the peak demand (at least 10)."""
    if name == "oracle":
        return "oracle"
    if name in ("hpa", "roadmap"):
        return ScalingPolicy.model_validate(
            {"preset": name, "capacity": capacity, "min": 1, "max": max(10, 2 * peak_demand)}
        )
    raise PolicyError(f"unknown policy {name!r}: use oracle, hpa, roadmap or a YAML file")


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
    resolve: Callable[[str, float, int], PolicyRef] = preset_policy,
    on_done: Callable[[SimResult], None] | None = None,
) -> list[SimResult]:
    """Replay every trace under every policy; capacity per trace comes from ``peak``."""
    results: list[SimResult] = []
    for path in traces:
        trace: Trace = load_trace(path)
        capacity = capacity_for_peak(trace.peak_rate, peak)
        model = ServiceModel(capacity=capacity, startup=startup)
        peak_demand = model.demand(trace.peak_rate)
        for name in policies:
            policy = resolve(name, capacity, peak_demand)
            result = simulate(trace, policy, model, interval=interval, name=name)
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
