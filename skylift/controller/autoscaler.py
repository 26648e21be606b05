"""Runs the pure engine for one service at its policy interval.

It keeps the engine's ``State`` between decisions (the stabilization and
rate-limit memory) and the last decision for ``skylift explain``. No I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from skylift.engine import Decision, Observations, ScalingPolicy, State, compile_policy, decide

_METRICS = ("cpu", "memory", "rps", "connections", "p95_latency", "queue")


class Autoscaler:
    """One service's autoscaling: ``due`` says when, ``evaluate`` decides."""

    def __init__(self, service: str, policy: ScalingPolicy) -> None:
        self.service = service
        self.policy = policy
        self.compiled = compile_policy(policy)
        self.state: State | None = None
        self.last: Decision | None = None
        self.last_at: float | None = None
        self.last_inputs: dict[str, float | None] = {}
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def clamp(self, desired: int) -> int:
        """Where a count set by hand or by config lands inside [min, max]."""
        return max(self.policy.min, min(self.policy.max, desired))

    def evaluate(
        self, obs: Observations, current: int, ready: int, now: float, wall: float
    ) -> Decision:
        """Decide from what was observed; a manual scale since last time becomes the base.

        ``now`` is the controller's monotonic clock (what the samples carry);
        ``wall`` is Unix time at ``now``, for schedules and events.
        """
        if self.state is None:
            state = State(desired=current, ready=ready)
        elif self.state.desired != current:
            state = dataclasses.replace(self.state, desired=current, ready=ready)
        else:
            state = self.state.with_ready(ready)
        decision = decide(self.compiled, obs, state, now, wall=wall)
        self.state = decision.state
        self.last = decision
        self.last_at = now
        self.last_inputs = latest_values(obs, now)
        self.next_at = now + self.policy.interval
        return decision

    def explain(self, now: float) -> dict[str, Any]:
        """Inputs, each check's recommendation and every clamp of the last decision."""
        decision = self.last
        if decision is None:
            return {"service": self.service, "decided": False, "reason": "no decision yet"}
        return {
            "service": self.service,
            "decided": True,
            "seconds_ago": round(now - (self.last_at or now), 1),
            "next_in": round(max(0.0, self.next_at - now), 1),
            "inputs": self.last_inputs,
            "current": decision.current,
            "desired": decision.desired,
            "direction": decision.direction,
            "recommended": decision.recommended,
            "dry_run": self.policy.dry_run,
            "paused": self.policy.paused,
            "min": self.policy.min,
            "max": self.policy.max,
            "checks": [
                {
                    "check": r.name,
                    "value": r.value,
                    "recommendation": r.recommendation,
                    "action": r.action,
                    "reason": r.reason,
                }
                for r in decision.checks
            ],
            "clamps": [
                {"stage": c.stage, "before": c.before, "after": c.after, "reason": c.reason}
                for c in decision.clamps
            ],
            "reasons": list(decision.reasons),
        }


def latest_values(obs: Observations, now: float) -> dict[str, float | None]:
    """The newest sample of each metric inside the window, None when missing."""
    out: dict[str, float | None] = {}
    for name in _METRICS:
        series = getattr(obs, name)
        value = None
        if series is not None and series.times and now - series.times[-1] < obs.window:
            value = round(float(series.values[-1]), 6)
        out[name] = value
    return out


def reason_label(decision: Decision) -> str:
    """A bounded label for the decisions counter: what moved (or held) the count."""
    if decision.clamps:
        return decision.clamps[-1].stage.replace(" ", "_")
    if decision.direction == "hold":
        return "steady"
    for result in decision.checks:
        if result.recommendation == decision.recommended:
            return result.check.metric
    return "checks"
