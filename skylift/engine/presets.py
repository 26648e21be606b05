"""Built-in policies, as the raw YAML-shaped dicts a user could have written.

Keeping them as data (not models) means a preset goes through exactly the same
validation as a hand-written policy, and a user override is a dict merge.
"""

from __future__ import annotations

from typing import Any

PRESETS = ("roadmap", "hpa", "predictive")
ROADMAP_RPS_FRACTION = 0.8
"""The roadmap rps rule fires at 80% of the per-replica capacity: early enough to
add a replica before the SLO breaks, late enough not to fire on normal load."""


def _roadmap(capacity: float | None) -> dict[str, Any]:
    checks: list[dict[str, Any]] = [
        {"kind": "threshold", "metric": "cpu", "above": "70%", "for": "5m", "change": "+1"},
        {"kind": "threshold", "metric": "memory", "above": "80%", "for": "5m", "change": "+1"},
        {
            "kind": "threshold",
            "metric": "p95_latency",
            "above": "500ms",
            "for": "1m",
            "change": "+1",
        },
        {"kind": "threshold", "metric": "cpu", "below": "30%", "for": "15m", "change": "-1"},
    ]
    if capacity is not None:
        checks.insert(
            2,
            {
                "kind": "threshold",
                "metric": "rps",
                "per_replica": True,
                "above": round(capacity * ROADMAP_RPS_FRACTION, 6),
                "for": "1m",
                "change": "+1",
            },
        )
    for check in checks:
        check["group"] = "roadmap"
    return {
        "interval": "15s",
        "checks": checks,
        # Threshold rules step by one, so pacing comes from cooldowns, not rate limits.
        "behavior": {
            "up": {"cooldown": "1m"},
            "down": {"cooldown": "5m"},
        },
    }


def _hpa() -> dict[str, Any]:
    """A Kubernetes HPA on cpu at 70 % with no ``behavior`` block, counted as HPA counts.

    Without a behavior block HPA caps a scale-up at max(2 x current, 4) per decision
    and keeps the highest recommendation of the last 5 minutes; a user who adds
    ``behavior`` gets HPA's behavior semantics instead (docs/engine.md).
    """
    return {
        "semantics": "hpa",
        "interval": "15s",
        "checks": [{"kind": "target", "metric": "cpu", "target": "70%", "tolerance": "10%"}],
    }


def _predictive(capacity: float | None) -> dict[str, Any]:
    """Forecast floor over a reactive "current demand" check (see docs/engine.md).

    The reactive check targets 100 % of capacity: on its own it is always one
    start-up late, which is the forecast's job; together the larger count wins.
    No stabilization or rate limit: the forecast already covers the horizon, and
    a pre-scale that arrives in steps arrives late.
    """
    if capacity is None:
        raise ValueError(
            "the predictive preset needs capacity (requests/s one replica serves at its SLO)"
        )
    return {
        "interval": "15s",
        "checks": [
            {
                "kind": "target",
                "metric": "rps",
                "target": capacity,
                "tolerance": "0%",
                "name": "rps at capacity",
            }
        ],
        "forecast": {},
        "behavior": {"up": {"stabilization": "0s"}, "down": {"stabilization": "0s"}},
    }


def preset_fields(name: str, capacity: float | None) -> dict[str, Any]:
    """The fields a preset contributes; the caller's own fields override them."""
    if name == "roadmap":
        return _roadmap(capacity)
    if name == "hpa":
        return _hpa()
    if name == "predictive":
        return _predictive(capacity)
    raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
