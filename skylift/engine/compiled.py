"""The validated policy flattened into slots dataclasses for the decision hot path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from skylift.engine.checks import (
    CompiledCheck,
    StepRule,
    TargetRule,
    ThresholdRule,
    threshold_label,
)
from skylift.engine.metrics import TOTALS, format_value
from skylift.engine.predictive import CompiledForecast, compile_forecast
from skylift.engine.schedule import Calendar, compile_calendar

if TYPE_CHECKING:
    from skylift.engine.policy import DirectionBehavior, ScalingPolicy


@dataclass(frozen=True, slots=True)
class CompiledDirection:
    """One direction's pacing; ``limits`` holds (is_percent, value, period).

    ``disabled`` is HPA's ``selectPolicy: Disabled``: no move in this direction.
    """

    stabilization: float
    limits: tuple[tuple[bool, float, float], ...]
    select_max: bool
    cooldown: float
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Everything ``decide`` needs, with no validation left to do.

    ``group_of`` maps each check to its group number; None when no check is grouped.
    """

    min: int
    max: int
    interval: float
    checks: tuple[CompiledCheck, ...]
    group_of: tuple[int, ...] | None
    up: CompiledDirection
    down: CompiledDirection
    fallback_after: int
    fallback_replicas: int
    paused: bool
    dry_run: bool
    history_span: float
    events_span: float
    metrics: tuple[str, ...]
    calendar: Calendar | None = None
    forecast: CompiledForecast | None = None
    hpa: bool = False
    """Kubernetes HPA semantics (``semantics: hpa``): see ``decide``."""
    hpa_no_behavior: bool = False
    """HPA semantics for an HPA without a ``behavior`` block."""


HPA_DOWNSCALE_WINDOW = 300.0
"""kube-controller-manager's ``--horizontal-pod-autoscaler-downscale-stabilization``
default: the scale-down window of an HPA without a behavior block."""


def _direction(behavior: DirectionBehavior) -> CompiledDirection:
    return CompiledDirection(
        stabilization=behavior.stabilization,
        limits=tuple((lim.type == "percent", lim.value, lim.period) for lim in behavior.limits),
        select_max=behavior.select != "min",
        cooldown=behavior.cooldown,
        disabled=behavior.select == "disabled",
    )


def _group_index(checks: list[CompiledCheck]) -> tuple[int, ...]:
    """Map each check to a dense group number (ungrouped checks are groups of one)."""
    numbers: dict[str, int] = {}
    return tuple(numbers.setdefault(c.group, len(numbers)) for c in checks)


def compile_policy(policy: ScalingPolicy) -> CompiledPolicy:
    """Flatten a validated policy; labels are rendered once here, not per decision."""
    from skylift.engine.policy import StepCheck, TargetCheck, ThresholdCheck

    compiled: list[CompiledCheck] = []
    for index, check in enumerate(policy.checks):
        group = check.group if check.group is not None else f"#{index}"
        if isinstance(check, ThresholdCheck):
            above = check.above is not None
            limit = check.above if check.above is not None else check.below
            assert limit is not None  # guaranteed by the model validator
            label = check.name or threshold_label(
                check.metric, check.per_replica, above, limit, check.for_
            )
            compiled.append(
                ThresholdRule(
                    label,
                    check.metric,
                    group,
                    check.per_replica,
                    above,
                    limit,
                    check.for_,
                    check.effective_change,
                )
            )
        elif isinstance(check, TargetCheck):
            label = (
                check.name or f"{check.metric} target {format_value(check.metric, check.target)}"
            )
            compiled.append(
                TargetRule(
                    label,
                    check.metric,
                    group,
                    check.metric in TOTALS,
                    check.target,
                    check.tolerance,
                    policy.semantics == "hpa",
                )
            )
        elif isinstance(check, StepCheck):
            bands = tuple(
                (
                    b.above if b.above is not None else float("-inf"),
                    b.below if b.below is not None else float("inf"),
                    b.change,
                )
                for b in check.bands
            )
            label = check.name or f"{check.metric} steps"
            compiled.append(StepRule(label, check.metric, group, check.per_replica, bands))
    hpa = policy.semantics == "hpa"
    no_behavior = hpa and not policy.hpa_behavior_block
    if no_behavior:
        # An HPA without behavior: a fixed per-decision cap (in ``decide``) and the
        # controller-wide scale-down window; no rate limits, no scale events.
        up = CompiledDirection(0.0, (), True, 0.0)
        down = CompiledDirection(HPA_DOWNSCALE_WINDOW, (), True, 0.0)
    else:
        up = _direction(policy.behavior.up)
        down = _direction(policy.behavior.down)
    periods = [lim[2] for lim in up.limits + down.limits]
    return CompiledPolicy(
        min=policy.min,
        max=policy.max,
        interval=policy.interval,
        checks=tuple(compiled),
        group_of=_group_index(compiled)
        if any(c.group is not None for c in policy.checks)
        else None,
        up=up,
        down=down,
        fallback_after=policy.fallback.after_failures if policy.fallback else 0,
        fallback_replicas=policy.fallback.replicas if policy.fallback else 0,
        paused=policy.paused,
        dry_run=policy.dry_run,
        history_span=max(up.stabilization, down.stabilization),
        events_span=max(periods, default=0.0),
        metrics=tuple(sorted({c.metric for c in compiled})),
        calendar=compile_calendar(policy.schedules, policy.events),
        forecast=compile_forecast(policy.forecast, policy.capacity)
        if policy.forecast is not None
        else None,
        hpa=hpa,
        hpa_no_behavior=no_behavior,
    )
