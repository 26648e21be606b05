"""Predictive scaling: forecast the load over the start-up horizon and keep enough ahead.

The ``Forecaster`` is owned by the caller (the controller per service, the
simulator per run). It is pure in the engine's sense (no clock, no I/O: the
caller passes ``now`` and ``wall``) but it is an online model and so mutable:
each call to ``advance`` ingests the samples that arrived since the last call,
in O(new samples), and answers an ``Outlook`` that ``decide`` takes as input.

How the count is made, per decision at wall time w:

1. the metric (rps by default) is rolled up into ``step`` buckets (1 minute);
   a closed bucket updates a Holt-Winters model of the Anscombe-transformed
   count sqrt(count + 3/8) (Poisson noise has the same spread at any level), with daily
   and weekly seasons (``skylift.engine.forecast``);
2. the point forecast is the highest bucket in [w, w + startup + interval]:
   a replica started now is ready at w + startup, and the next decision's at
   w + interval + startup; the still-open bucket's partial mean shifts it;
3. headroom: the ``quantile`` of the model's own recent errors on exactly that
   quantity (realized max vs forecast max, the last week), and at least the
   Poisson ``quantile`` of the forecast count per bucket, so small per-minute
   counts are covered. ``by_level`` (the default) takes the quantile of the
   relative error among forecasts of the same load level (replica counts in
   doubling bands), because real bursts grow with the load while a pooled
   square-root-scale error (``pooled``) shrinks relative to it: on wc98 that
   left ramps at 10-50 replicas short (docs/benchmarks.md);
4. replicas = ceil(upper / target) (``decide`` applies an event's multiplier);
   ``decide`` uses it as a floor under the reactive checks (the safest action
   wins), so a bad forecast can only add replicas, never remove what reactive
   scaling asks for.

With less than ``min_history`` of data the outlook says so and offers only a
reactive floor, HPA's: the highest trailing ``step`` mean of the last five
minutes (HPA's scale-down window) plus ``warmup_headroom``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from skylift.engine.forecast import (
    HoltWinters,
    OnlineModel,
    SeasonalNaive,
    normal_z,
    poisson_upper,
)
from skylift.engine.model import Series
from skylift.units import Duration, Percent

ERROR_MEMORY = 7 * 24 * 60
"""Buckets of forecast errors kept for the headroom quantile (a week of minutes)."""
MIN_ERRORS = 60
"""Errors needed before the empirical headroom is trusted."""
REFIT_EVERY = 60
"""Buckets between recomputations of the headroom quantile (an hour of minutes)."""
WARMUP_WINDOW = 300.0
"""Seconds of trailing means whose highest sets the warm-up floor: HPA's scale-down window."""
LEVEL_MIN_ERRORS = 200
"""Errors a load level needs before its own headroom replaces the pooled one."""
LOWEST_LEVEL = 0.25
"""Forecasts below a quarter of a replica's target share one level."""


def _forward(rate: float, step: float) -> float:
    """Anscombe transform of the bucket count: Poisson noise becomes N(0, 1/4) at any level."""
    return math.sqrt(max(rate, 0.0) * step + 0.375)


def _inverse(y: float, step: float) -> float:
    return max(y * y - 0.375, 0.0) / step


def _level(rate: float, target: float) -> int:
    """The load level of a forecast: its replica need in doubling bands (<½, ½-1, 1-2, 2-4...)."""
    return math.floor(math.log2(max(rate / target, LOWEST_LEVEL)))


class ForecastSettings(BaseModel):
    """The ``forecast:`` block of a policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="false: the policy is exactly its reactive checks")
    metric: Literal["rps", "connections", "queue"] = Field(
        "rps", description="a service total to forecast"
    )
    target: float | None = Field(
        None, gt=0, description="per-replica value of the metric; default: the policy's capacity"
    )
    startup: Duration | None = Field(
        None,
        description="replica start-up delay to scale ahead by; default: what the caller "
        "measured (the simulator's model), else 60s",
    )
    step: Duration = Field(60.0, description="roll-up bucket of the history")
    seasons: tuple[Duration, ...] = Field(
        (86400.0, 604800.0), description="seasonal periods, e.g. [1d, 1w]"
    )
    model: Literal["holt_winters", "seasonal_naive"] = Field(
        "holt_winters",
        description="holt_winters: level, damped trend, daily and weekly seasons; "
        "seasonal_naive: the same bucket one (first) season ago, a baseline",
    )
    headroom: Literal["by_level", "pooled"] = Field(
        "by_level",
        description="by_level: the quantile of the relative error among forecasts of "
        "the same load level (bursts grow with the load); pooled: one quantile of the "
        "error on the square-root scale (Poisson-like noise)",
    )
    quantile: Percent = Field(0.95, description="headroom: cover this quantile of the error")
    min_history: Duration = Field(86400.0, description="history needed before forecasting")
    warmup_headroom: Percent = Field(
        0.43,
        description="before min_history: recent peak x (1 + this); 43 % is the headroom "
        "of HPA's 70 % target (1 / 0.7 - 1), so warm-up is as careful as HPA",
    )
    alpha: float = Field(0.3, ge=0, le=1, description="level smoothing per bucket")
    beta: float = Field(0.01, ge=0, le=1, description="trend smoothing per bucket")
    gamma: float = Field(0.1, ge=0, le=1, description="season smoothing per bucket")
    phi: float = Field(0.9, gt=0, le=1, description="trend damping per bucket")

    @model_validator(mode="after")
    def _valid(self) -> ForecastSettings:
        if self.step <= 0:
            raise ValueError("forecast step must be greater than zero, e.g. '1m'")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError("forecast quantile must be within [50%, 100%), e.g. '99%'")
        for season in self.seasons:
            if season < 2 * self.step or not (season / self.step).is_integer():
                raise ValueError(
                    f"season {season:g}s must be a whole number (>= 2) of steps ({self.step:g}s)"
                )
        return self


@dataclass(frozen=True, slots=True)
class Outlook:
    """The forecaster's answer for one decision.

    ``replicas`` is the floor it asks for (None: nothing to say, e.g. no data);
    ``ready`` is False while the history is too short (then the floor is only the
    reactive warm-up floor). ``note`` (one human sentence) is built only when read.
    """

    replicas: int | None
    ready: bool
    point: float
    upper: float
    metric: str = "rps"
    lead: float = 0.0
    history: float = 0.0
    needed: float = 0.0

    @property
    def note(self) -> str:
        if not self.ready:
            return (
                f"forecast: {self.history / 3600.0:.1f}h of history, needs "
                f"{self.needed / 3600.0:g}h: reactive only"
            )
        return (
            f"forecast: {self.metric} up to {self.point:.4g} in the next {self.lead:g}s, "
            f"{self.upper:.4g} with headroom: {self.replicas} replicas"
        )


@dataclass(frozen=True, slots=True)
class ForecastStats:
    """Forecast error on what the policy uses: the max rate over the horizon.

    ``mape_pct`` and ``under_pct`` judge the point forecast; ``upper_under_pct`` is
    how often even the headroom'd forecast was short (the reactive checks cover it).
    """

    forecasts: int
    mape_pct: float
    under_pct: float
    upper_under_pct: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "forecasts": self.forecasts,
            "mape_pct": round(self.mape_pct, 3),
            "under_pct": round(self.under_pct, 3),
            "upper_under_pct": round(self.upper_under_pct, 3),
        }


@dataclass(frozen=True, slots=True)
class CompiledForecast:
    metric: str
    model: str
    by_level: bool
    target: float
    startup: float | None
    step: float
    seasons: tuple[int, ...]
    quantile: float
    z: float
    min_history: float
    warmup_headroom: float
    alpha: float
    beta: float
    gamma: float
    phi: float


def compile_forecast(settings: ForecastSettings, capacity: float | None) -> CompiledForecast | None:
    """None when forecasting is off (the hot path then skips it entirely)."""
    if not settings.enabled:
        return None
    target = settings.target if settings.target is not None else capacity
    if target is None:
        raise ValueError("forecast needs a target: set forecast.target or the policy's capacity")
    return CompiledForecast(
        settings.metric,
        settings.model,
        settings.headroom == "by_level",
        target,
        settings.startup,
        settings.step,
        tuple(round(s / settings.step) for s in settings.seasons),
        settings.quantile,
        normal_z(settings.quantile),
        settings.min_history,
        settings.warmup_headroom,
        settings.alpha,
        settings.beta,
        settings.gamma,
        settings.phi,
    )


class Forecaster:
    """Online forecast of one service's load; see the module docstring.

    ``interval`` is the decision interval and ``startup`` the start-up delay the
    caller measured (used when the settings leave ``startup`` unset).
    """

    def __init__(self, cf: CompiledForecast, interval: float, startup: float = 60.0) -> None:
        self.cf = cf
        self.lead = (cf.startup if cf.startup is not None else startup) + interval
        self.span = max(1, math.ceil(self.lead / cf.step))
        self.model: OnlineModel = (
            HoltWinters(cf.seasons, cf.alpha, cf.beta, cf.gamma, cf.phi)
            if cf.model == "holt_winters"
            else SeasonalNaive(cf.seasons[0] if cf.seasons else 1)
        )
        # A rate floor of one request per bucket keeps the log of an empty bucket finite.
        self._eps = 1.0 / cf.step
        self._seen = -math.inf
        self._open: int | None = None
        self._sum = 0.0
        self._n = 0
        self._recent: deque[tuple[int, float]] = deque(maxlen=self.span + 2)
        self._trailing: deque[tuple[float, float]] = deque()
        self._pending: deque[tuple[int, float, float]] = deque()
        self._errors = np.zeros(ERROR_MEMORY)
        self._levels = np.zeros(ERROR_MEMORY, dtype=np.int8)  # -2 .. log2(replicas)
        self._by_level: dict[int, float] = {}
        self._filled = 0
        self._cursor = 0
        self._headroom = 0.0
        self._since_refit = 0
        self._first: int | None = None
        self._cache: dict[int, float] = {}
        self._cache_last: int | None = None
        # error accounting
        self._count = 0
        self._ape = 0.0
        self._under = 0
        self._upper_under = 0

    # -- ingest ---------------------------------------------------------------------------

    def _close(self, index: int, rate: float) -> None:
        y = _forward(rate, self.cf.step)
        if self._first is None:
            self._first = index
        self._recent.append((index, y))
        self._score(index)
        self.model.update(index, y)
        if self._filled:
            self._since_refit += 1
            if self._since_refit >= REFIT_EVERY or self._filled < MIN_ERRORS * 2:
                self._refit()
        point = max(self.model.predict(index + j) for j in range(1, self.span + 1))
        self._pending.append((index + self.span, point, self._upper(point)))

    def _score(self, index: int) -> None:
        """Compare forecasts whose horizon ended with the realized max over it."""
        pending = self._pending
        while pending and pending[0][0] <= index:
            end, point, upper = pending.popleft()
            start = end - self.span
            realized = max((y for i, y in self._recent if start < i <= end), default=None)
            if realized is None:
                continue
            self._errors[self._cursor] = self._error(realized, point)
            self._levels[self._cursor] = _level(_inverse(point, self.cf.step), self.cf.target)
            self._cursor = (self._cursor + 1) % ERROR_MEMORY
            self._filled = min(self._filled + 1, ERROR_MEMORY)
            actual = _inverse(realized, self.cf.step)
            if actual > 0.0:
                self._count += 1
                self._ape += abs(_inverse(point, self.cf.step) - actual) / actual
                self._under += point < realized
                self._upper_under += upper < actual

    def _error(self, realized: float, point: float) -> float:
        """by_level: log ratio of the rates; pooled: difference on the square-root scale."""
        if not self.cf.by_level:
            return realized - point
        step, eps = self.cf.step, self._eps
        return math.log(_inverse(realized, step) + eps) - math.log(_inverse(point, step) + eps)

    def _refit(self) -> None:
        self._since_refit = 0
        errors = self._errors[: self._filled]
        quantile = self.cf.quantile
        self._headroom = max(0.0, float(np.quantile(errors, quantile)))
        if not self.cf.by_level:
            return
        levels = self._levels[: self._filled]
        self._by_level = {}
        for level in np.unique(levels):
            own = errors[levels == level]
            if own.size >= LEVEL_MIN_ERRORS:
                self._by_level[int(level)] = max(0.0, float(np.quantile(own, quantile)))

    def _upper(self, point: float) -> float:
        """The rate ``point`` (square-root scale) plus headroom for its level."""
        step = self.cf.step
        if not self.cf.by_level:
            return _inverse(point + self._headroom, step)
        rate = _inverse(point, step)
        headroom = self._by_level.get(_level(rate, self.cf.target), self._headroom)
        return (rate + self._eps) * math.exp(headroom) - self._eps

    def _ingest(self, series: Series, now: float, wall: float) -> None:
        times = series.times
        values = series.values
        # Progress is kept in wall time, so history replayed on one time scale (e.g.
        # Unix seconds after a restart) and live samples on another (monotonic) mix.
        offset = wall - now
        lo = bisect_right(times, self._seen - offset)
        hi = bisect_right(times, now)
        if lo >= hi:
            return
        step = self.cf.step
        for k in range(lo, hi):
            # A sample stamped t covers the time just before t.
            index = math.floor((times[k] + offset - 1e-6) / step)
            if self._open is None:
                self._open = index
            elif index != self._open:
                if self._n:
                    self._close(self._open, self._sum / self._n)
                self._open, self._sum, self._n = index, 0.0, 0
            self._sum += values[k]
            self._n += 1
        self._seen = times[hi - 1] + offset

    # -- answer ---------------------------------------------------------------------------

    def _predict(self, index: int) -> float:
        """The model's forecast for a bucket, cached until the next bucket closes."""
        value = self._cache.get(index)
        if value is None:
            value = self._cache[index] = self.model.predict(index)
        return value

    @property
    def history(self) -> float:
        """Seconds of history the model has learned from."""
        if self._first is None or self.model.last is None:
            return 0.0
        return (self.model.last - self._first + 1) * self.cf.step

    @property
    def ready(self) -> bool:
        return self.history >= self.cf.min_history and self._filled >= MIN_ERRORS

    def stats(self) -> ForecastStats:
        n = self._count
        if not n:
            return ForecastStats(0, math.nan, math.nan, math.nan)
        return ForecastStats(
            n, 100.0 * self._ape / n, 100.0 * self._under / n, 100.0 * self._upper_under / n
        )

    def horizon(self, wall: float) -> tuple[int, int]:
        """First and last bucket a decision at ``wall`` must cover: now to now + lead."""
        step = self.cf.step
        return math.floor(wall / step), math.floor((wall + self.lead) / step)

    def _warmup_rate(self, series: Series | None, now: float, wall: float) -> float | None:
        """The highest trailing ``step`` mean of the metric over the last WARMUP_WINDOW.

        Means are stamped in wall time: history replayed after a restart (Unix
        seconds) and live samples (monotonic) then expire on one clock.
        """
        trailing = self._trailing
        if series is not None:
            times = series.times
            hi = bisect_right(times, now)
            lo = bisect_right(times, now - self.cf.step, 0, hi)
            if hi > lo:
                trailing.append((wall, sum(series.values[lo:hi]) / (hi - lo)))
        while trailing and trailing[0][0] <= wall - WARMUP_WINDOW:
            trailing.popleft()
        return max((mean for _, mean in trailing), default=None)

    def advance(self, series: Series | None, now: float, wall: float) -> Outlook:
        """Ingest new samples up to ``now`` and say how many replicas the horizon needs."""
        cf = self.cf
        if series is not None:
            self._ingest(series, now, wall)
        partial = _forward(self._sum / self._n, cf.step) if self._n else None
        if not self.ready:
            history = self.history
            point = self._warmup_rate(series, now, wall)
            if point is None:
                return Outlook(None, False, 0.0, 0.0, cf.metric, self.lead, history, cf.min_history)
            upper = point * (1.0 + cf.warmup_headroom)
            replicas = math.ceil(upper / cf.target - 1e-9)
            return Outlook(
                replicas, False, point, upper, cf.metric, self.lead, history, cf.min_history
            )
        last = self.model.last
        assert last is not None  # ready implies data
        if last != self._cache_last:
            self._cache_last = last
            self._cache.clear()
        predict = self._predict
        first, end = self.horizon(wall)
        shift = 0.0
        point = -math.inf
        if partial is not None and self._open is not None and self._open > last:
            shift = cf.alpha * (partial - predict(self._open))
            point = partial
        for index in range(max(first, last + 1), end + 1):
            value = predict(index) + shift
            if value > point:
                point = value
        if point == -math.inf:
            point = predict(last + 1)
        rate = _inverse(point, cf.step)
        empirical = self._upper(point)
        noise = poisson_upper(rate * cf.step, cf.z) / cf.step
        upper = max(empirical, noise)
        replicas = math.ceil(upper / cf.target - 1e-9)
        return Outlook(replicas, True, rate, upper, cf.metric, self.lead)
