"""Compiled checks: each turns observations into one replica recommendation.

Hot path: no pydantic, no allocation beyond the result; windows are found by
bisection over the caller's sample arrays.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from skylift.engine.changes import Change
from skylift.engine.metrics import FRACTIONS, format_value
from skylift.engine.model import Action, CheckResult, Observations, Series, State
from skylift.units import format_duration

_EPS = 1e-9
"""Float noise guard: 0.7 * 10 / 0.7 must be 10 replicas, not 11."""


WindowView = tuple[Sequence[float], Sequence[float], int, int, float]
"""(times, values, lo, hi, mean) of one metric: samples ``lo:hi`` lie in ``(now - window, now]``."""


def view_windows(
    obs: Observations, metrics: tuple[str, ...], now: float
) -> dict[str, WindowView | None]:
    """Locate each metric's window once per decision; None marks a MISSING metric.

    Series that share one ``times`` list (the simulator's) are bisected once.
    """
    window = obs.window
    views: dict[str, WindowView | None] = {}
    last_times: Sequence[float] | None = None
    lo = hi = 0
    for metric in metrics:
        series: Series | None = getattr(obs, metric)
        if series is None:
            views[metric] = None
            continue
        times = series.times
        if times is not last_times:
            hi = bisect_right(times, now)
            lo = bisect_right(times, now - window, 0, hi)
            last_times = times
        if lo >= hi:
            views[metric] = None
            continue
        values = series.values
        mean = values[lo] if hi - lo == 1 else sum(values[lo:hi]) / (hi - lo)
        views[metric] = (times, values, lo, hi, mean)
    return views


def _missing(check: CompiledCheck) -> CheckResult:
    return CheckResult(check, None, None, "missing")


def _result(check: CompiledCheck, value: float, rec: int, current: int) -> CheckResult:
    action: Action = "up" if rec > current else "down" if rec < current else "hold"
    return CheckResult(check, value, rec, action)


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """``metric above|below limit for duration -> change``."""

    label: str
    metric: str
    group: str
    per_replica: bool
    above: bool
    limit: float
    duration: float
    change: Change

    def evaluate(
        self, view: WindowView | None, state: State, now: float, window: float
    ) -> CheckResult:
        if view is None:
            return CheckResult(self, None, None, "missing")
        times, values, lo, hi, mean = view
        limit = self.limit
        if self.per_replica:
            ready = state.ready
            if ready <= 0:
                return CheckResult(self, None, None, "missing")
            mean /= ready
            limit *= ready
        duration = self.duration
        if duration <= 0.0:
            fired = mean > self.limit if self.above else mean < self.limit
        else:
            # Cheap reject on the newest sample before scanning the whole duration.
            last = values[hi - 1]
            fired = last > limit if self.above else last < limit
            if fired:
                since = now - duration
                start = bisect_right(times, since, 0, lo if duration >= window else hi)
                # The samples must reach back over the whole duration (within one window).
                if start >= hi or times[start] > since + window:
                    fired = False
                elif self.above:
                    fired = min(values[start:hi]) > limit
                else:
                    fired = max(values[start:hi]) < limit
        current = state.desired
        if not fired:
            return CheckResult(self, mean, current, "hold")
        rec = self.change.apply(current)
        return CheckResult(
            self, mean, rec, "up" if rec > current else "down" if rec < current else "hold"
        )

    def describe(self, result: CheckResult) -> str:
        if result.value is None:
            return f"{self.label}: no recent {self.metric} sample"
        value = format_value(self.metric, result.value)
        if result.action == "hold":
            return f"{self.label}: {self.metric} is {value}, rule not met, hold"
        rec = result.recommendation
        return f"{self.label}: {self.metric} is {value}, rule met, {self.change} -> {rec}"


@dataclass(frozen=True, slots=True)
class TargetRule:
    """Kubernetes HPA target tracking with a tolerance band.

    ``hpa``: count with HPA's arithmetic: no float-noise guard, and a cpu/memory
    utilization truncated to a whole percent as HPA's integer division does.
    """

    label: str
    metric: str
    group: str
    total: bool
    target: float
    tolerance: float
    hpa: bool = False

    def evaluate(
        self, view: WindowView | None, state: State, now: float, window: float
    ) -> CheckResult:
        if view is None:
            return _missing(self)
        mean = view[4]
        current = state.desired
        eps = 0.0 if self.hpa else _EPS
        if self.total:
            ratio = mean / (self.target * max(current, 1))
            proposal = math.ceil(mean / self.target - eps)
        else:
            ready = state.ready
            if ready <= 0:
                return _missing(self)
            if self.hpa and self.metric in FRACTIONS:
                # HPA: utilization = int(usage * 100 / request), a whole percent.
                ratio = float(int(mean * 100.0 + _EPS)) / whole_percent(self.target)
            else:
                ratio = mean / self.target
            proposal = math.ceil(ready * ratio - eps)
        if abs(1.0 - ratio) <= self.tolerance + eps:
            rec = current
        elif ratio > 1.0:
            # Replicas still starting: never read "above target" as a reason to shrink.
            rec = max(proposal, current)
        else:
            rec = min(proposal, current)
        return _result(self, mean, rec, current)

    def describe(self, result: CheckResult) -> str:
        if result.value is None:
            return f"{self.label}: no recent {self.metric} sample"
        value = format_value(self.metric, result.value)
        target = format_value(self.metric, self.target)
        per = " per replica" if self.total else ""
        if result.action == "hold":
            return f"{self.label}: {self.metric} {value} vs target {target}{per}, hold"
        return (
            f"{self.label}: {self.metric} {value} vs target {target}{per} "
            f"-> {result.recommendation} replicas"
        )


@dataclass(frozen=True, slots=True)
class StepRule:
    """Step scaling: the band the value falls in picks the change."""

    label: str
    metric: str
    group: str
    per_replica: bool
    bands: tuple[tuple[float, float, Change], ...]

    def evaluate(
        self, view: WindowView | None, state: State, now: float, window: float
    ) -> CheckResult:
        if view is None:
            return _missing(self)
        mean = view[4]
        if self.per_replica:
            if state.ready <= 0:
                return _missing(self)
            mean /= state.ready
        current = state.desired
        rec = current
        for low, high, change in self.bands:
            if low <= mean < high:
                rec = change.apply(current)
                break
        return _result(self, mean, rec, current)

    def describe(self, result: CheckResult) -> str:
        if result.value is None:
            return f"{self.label}: no recent {self.metric} sample"
        value = format_value(self.metric, result.value)
        if result.action == "hold":
            return f"{self.label}: {self.metric} is {value}, no band moves it, hold"
        return f"{self.label}: {self.metric} is {value} -> {result.recommendation} replicas"


CompiledCheck = ThresholdRule | TargetRule | StepRule


def whole_percent(fraction: float) -> float:
    """``0.7`` -> ``70.0`` exactly (HPA holds percentages as integers), else ``x * 100``."""
    percent = fraction * 100.0
    nearest = round(percent)
    return float(nearest) if abs(percent - nearest) < 1e-6 else percent


def threshold_label(
    metric: str, per_replica: bool, above: bool, limit: float, duration: float
) -> str:
    """Default name of a threshold rule, e.g. ``cpu above 70% for 5m``."""
    per = " per replica" if per_replica else ""
    side = "above" if above else "below"
    held = f" for {format_duration(duration)}" if duration > 0 else ""
    return f"{metric}{per} {side} {format_value(metric, limit)}{held}"
