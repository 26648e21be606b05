"""What a replay measured: SPEC RG elasticity metrics, cost, SLO and the timeline.

Elasticity metrics follow Herbst et al., "Ready for Rain? A View from SPEC
Research on the Future of Cloud Metrics" (SPEC RG, 2016), with demand d and
supply s (ready replicas) sampled every simulation tick of length dt over the
observed time T (gaps excluded):

- theta_U = 100/T * sum(max(d - s, 0) / d * dt)   under-provisioning accuracy, % of demand
- theta_O = 100/T * sum(max(s - d, 0) / d * dt)   over-provisioning accuracy, % of demand
- tau_U   = 100/T * sum([s < d] * dt)             share of time under-provisioned
- tau_O   = 100/T * sum([s > d] * dt)             share of time over-provisioned
- jitter  = (supply changes - demand changes) / hours: < 0 supply too sluggish, > 0 it oscillates
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Timeline:
    """One row per trace row: the state at the end of that row's interval."""

    t: list[int] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    demand: list[int] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    paid: list[float] = field(default_factory=list)
    """Replicas billed in the row (ready plus starting), averaged over the row's ticks.
    A row after a gap also carries the gap's replicas (billing does not stop when the
    metrics do), so ``sum(paid) * step`` is exactly the run's replica-seconds."""

    def to_csv(self) -> str:
        """CSV ``t,demand,desired,ready,paid``."""
        lines = ["t,demand,desired,ready,paid"]
        lines.extend(
            f"{t},{d},{w},{r},{round(p, 6):g}"
            for t, d, w, r, p in zip(
                self.t, self.demand, self.desired, self.ready, self.paid, strict=True
            )
        )
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class SimResult:
    """Scores of one policy on one trace; ``to_dict`` is the JSON output."""

    policy: str
    trace: str
    capacity_rps: float
    startup_s: float
    interval_s: float
    theta_u_pct: float
    theta_o_pct: float
    tau_u_pct: float
    tau_o_pct: float
    jitter_per_hour: float
    replica_hours: float
    oracle_replica_hours: float
    slo_violation_minutes: float
    actions: int
    decisions: int
    observed_hours: float
    timeline: Timeline
    forecast: dict[str, float | int] | None = None
    """Forecast error of a predictive policy (``ForecastStats.to_dict``), else None."""
    spot_interruptions: int | None = None
    """Spot instances reclaimed during the run (None: no spot in the run)."""

    @property
    def cost_ratio(self) -> float:
        """Cost relative to the oracle (1.0 = the physical limit)."""
        if self.oracle_replica_hours <= 0:
            return float("nan")
        return self.replica_hours / self.oracle_replica_hours

    def to_dict(self) -> dict[str, Any]:
        """Rounded scores (no timeline) for JSON and tables."""
        return {
            "policy": self.policy,
            "trace": self.trace,
            "capacity_rps": round(self.capacity_rps, 6),
            "startup_s": self.startup_s,
            "interval_s": self.interval_s,
            "theta_u_pct": round(self.theta_u_pct, 3),
            "theta_o_pct": round(self.theta_o_pct, 3),
            "tau_u_pct": round(self.tau_u_pct, 3),
            "tau_o_pct": round(self.tau_o_pct, 3),
            "jitter_per_hour": round(self.jitter_per_hour, 3),
            "replica_hours": round(self.replica_hours, 3),
            "oracle_replica_hours": round(self.oracle_replica_hours, 3),
            "cost_ratio": round(self.cost_ratio, 4),
            "slo_violation_minutes": round(self.slo_violation_minutes, 2),
            "actions": self.actions,
            "decisions": self.decisions,
            "observed_hours": round(self.observed_hours, 3),
            **({"forecast": self.forecast} if self.forecast is not None else {}),
            **(
                {"spot_interruptions": self.spot_interruptions}
                if self.spot_interruptions is not None
                else {}
            ),
        }
