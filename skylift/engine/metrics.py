"""The metric vocabulary shared by policies, the controller and the simulator.

| name          | unit                                          | kind    |
|---------------|-----------------------------------------------|---------|
| `cpu`         | fraction of the per-replica request, averaged over ready replicas | average |
| `memory`      | fraction of the per-replica limit, averaged   | average |
| `rps`         | requests/s of the whole service               | total   |
| `connections` | current sessions of the whole service         | total   |
| `p95_latency` | seconds, service-wide 95th percentile          | average |
| `queue`       | queued requests of the whole service           | total   |
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from skylift.units import format_duration, parse_duration, parse_percent

Metric = Literal["cpu", "memory", "rps", "connections", "p95_latency", "queue"]
METRICS: tuple[str, ...] = get_args(Metric)
TOTALS = frozenset({"rps", "connections", "queue"})
"""Service totals: a target on them is per replica, and per_replica divides them."""
FRACTIONS = frozenset({"cpu", "memory"})


def parse_metric_value(metric: Any, value: Any) -> Any:
    """Parse a threshold/target in the metric's unit; leave unknown input to pydantic."""
    if metric in FRACTIONS:
        return parse_percent(value)
    if metric == "p95_latency":
        return parse_duration(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(
                f"invalid value {value!r} for metric {metric}: write a number"
            ) from None
    return value


def format_value(metric: str, value: float) -> str:
    """Render a metric value the way an operator wrote it."""
    if metric in FRACTIONS:
        return f"{value * 100:.4g}%"
    if metric == "p95_latency":
        if value >= 1e6:
            return "inf"
        return format_duration(round(value, 3)) if value >= 0.001 else f"{value:.3g}s"
    return f"{value:.4g}"


def render_metric_value(metric: str, value: float | None) -> float | str | None:
    """Serialise a value so it parses back exactly: fractions as ``'150%'`` strings,
    because a bare 1.5 would read back as 1.5 %."""
    if value is None or metric not in FRACTIONS:
        return value
    text = repr(round(value * 100.0, 9))
    return (text[:-2] if text.endswith(".0") else text) + "%"
