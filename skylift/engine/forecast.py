"""Forecasting models in numpy: seasonal naive, online Holt-Winters, error measures.

All pure. The models do not pick a scale: ``skylift.engine.predictive`` feeds
them the Anscombe transform sqrt(count + 3/8) of each bucket, on which Poisson
noise has the same spread at every level (log1p was tried first: its night-time
errors on small counts inflated the day-time headroom).

Holt-Winters here is the additive error-correction form with a damped trend
and one seasonal component per period (Taylor's double-seasonal variant when
given a day and a week):

    yhat(t+h) = level + sum_{j=1..h} phi^j * trend + sum_k season_k[(t+h) mod m_k]
    e         = y(t) - yhat(t)                  (one step ahead)
    level    += phi * trend + alpha * e
    trend     = phi * trend + beta * e
    season_k[t mod m_k] += gamma * e

The season slots are indexed by the absolute bucket number (wall-clock bucket),
so a gap in the data leaves the seasons aligned with the clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def seasonal_naive(history: Sequence[float], season: int, horizon: int) -> FloatArray:
    """Forecast ``horizon`` steps as the values one ``season`` earlier.

    With less than one season of history the last value is repeated (naive).
    """
    values = np.asarray(history, dtype=np.float64)
    if values.size == 0:
        raise ValueError("seasonal_naive needs at least one value")
    if horizon < 1:
        return np.empty(0)
    if season < 1 or values.size < season:
        return np.full(horizon, values[-1])
    last = values[-season:]
    reps = math.ceil(horizon / season)
    return np.tile(last, reps)[:horizon]


@dataclass(slots=True)
class HoltWinters:
    """Online additive Holt-Winters on one series (here: ``log1p`` of a rate).

    Mutable on purpose: one bucket is O(number of seasons), not O(history).
    ``update(index, y)`` takes the absolute bucket number, so gaps are allowed.
    """

    seasons: tuple[int, ...] = ()
    alpha: float = 0.3
    beta: float = 0.01
    gamma: float = 0.1
    phi: float = 0.9
    level: float = 0.0
    trend: float = 0.0
    last: int | None = None
    count: int = 0
    tables: list[FloatArray] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if not 0.0 < self.phi <= 1.0:
            raise ValueError(f"phi must be within (0, 1], got {self.phi}")
        if not self.tables:
            self.tables = [np.zeros(m) for m in self.seasons]

    def _season(self, index: int) -> float:
        total = 0.0
        for m, table in zip(self.seasons, self.tables, strict=True):
            total += float(table[index % m])
        return total

    def predict(self, index: int) -> float:
        """Point forecast for bucket ``index`` (> the last one seen)."""
        if self.last is None:
            return 0.0
        h = max(index - self.last, 1)
        phi = self.phi
        damp = h if phi == 1.0 else phi * (1.0 - phi**h) / (1.0 - phi)
        return self.level + damp * self.trend + self._season(index)

    def update(self, index: int, y: float) -> float:
        """Learn bucket ``index``'s value; returns the one-step error (0 on the first)."""
        if self.last is None:
            self.level = y - self._season(index)
            self.last = index
            self.count = 1
            return 0.0
        if index <= self.last:
            raise ValueError(f"bucket {index} is not after the last one ({self.last})")
        gap = index - self.last
        # Carry level and trend over a gap; the seasons stay aligned with the clock.
        phi = self.phi
        damp = gap if phi == 1.0 else phi * (1.0 - phi**gap) / (1.0 - phi)
        expected_level = self.level + damp * self.trend
        error = y - expected_level - self._season(index)
        self.level = expected_level + self.alpha * error
        self.trend = self.trend * phi**gap + self.beta * error
        if self.seasons:
            share = self.gamma * error / len(self.seasons)
            for m, table in zip(self.seasons, self.tables, strict=True):
                table[index % m] += share
        self.last = index
        self.count += 1
        return error


class OnlineModel(Protocol):
    """What the forecaster needs of a model: learn a bucket, predict a later one."""

    @property
    def last(self) -> int | None: ...

    @property
    def count(self) -> int: ...

    def predict(self, index: int) -> float: ...

    def update(self, index: int, y: float) -> float: ...


@dataclass(slots=True)
class SeasonalNaive:
    """Online seasonal naive: bucket ``index`` is forecast as bucket ``index - season``.

    The baseline every seasonal model must beat. Without that bucket (too little
    history, or a gap) it repeats the last value seen. Keeps one season of values.
    """

    season: int
    last: int | None = None
    count: int = 0
    _values: FloatArray = field(default_factory=lambda: np.zeros(0))
    _indexes: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _last_value: float = 0.0

    def __post_init__(self) -> None:
        if self.season < 1:
            raise ValueError(f"season must be at least 1 bucket, got {self.season}")
        self._values = np.zeros(self.season)
        # No bucket number can equal the sentinel, not even a negative one.
        self._indexes = np.full(self.season, np.iinfo(np.int64).min, dtype=np.int64)

    def predict(self, index: int) -> float:
        """The value one season before ``index``, else the last value (0.0 before any)."""
        if self.last is None:
            return 0.0
        back = index - self.season * math.ceil((index - self.last) / self.season)
        slot = back % self.season
        if self._indexes[slot] == back:
            return float(self._values[slot])
        return self._last_value

    def update(self, index: int, y: float) -> float:
        """Learn bucket ``index``; returns the one-step error (0 on the first)."""
        if self.last is not None and index <= self.last:
            raise ValueError(f"bucket {index} is not after the last one ({self.last})")
        error = 0.0 if self.last is None else y - self.predict(index)
        slot = index % self.season
        self._values[slot] = y
        self._indexes[slot] = index
        self._last_value = y
        self.last = index
        self.count += 1
        return error


def fit_holt_winters(
    values: Sequence[float] | FloatArray,
    seasons: tuple[int, ...] = (),
    *,
    alpha: float = 0.3,
    beta: float = 0.01,
    gamma: float = 0.1,
    phi: float = 0.9,
) -> HoltWinters:
    """Run the online model over a whole series (index = position)."""
    model = HoltWinters(seasons, alpha, beta, gamma, phi)
    for i, y in enumerate(values):
        model.update(i, float(y))
    return model


def mape(actual: Sequence[float], forecast: Sequence[float]) -> float:
    """Mean absolute percentage error in %, over points with actual > 0 (nan if none)."""
    a = np.asarray(actual, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    mask = a > 0
    if not mask.any():
        return float("nan")
    return float(np.mean(np.abs(f[mask] - a[mask]) / a[mask]) * 100.0)


def under_rate(actual: Sequence[float], forecast: Sequence[float]) -> float:
    """Share of points (in %) where the forecast was below what happened."""
    a = np.asarray(actual, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    if a.size == 0:
        return float("nan")
    return float(np.mean(f < a) * 100.0)


def normal_z(quantile: float) -> float:
    """z such that P(N(0,1) <= z) = quantile."""
    return NormalDist().inv_cdf(quantile)


def poisson_upper(mean: float, z: float) -> float:
    """Upper ``z`` bound of a Poisson count with this mean (Wilson-Hilferty-free form).

    ``mean + z*sqrt(mean) + z^2/2`` covers the skew of small counts: for a mean of 1
    and z = 2.33 (99 %) it gives 6.2, against the exact 99 % quantile of 4.
    """
    if mean <= 0.0:
        return z * z / 2.0
    return mean + z * math.sqrt(mean) + z * z / 2.0
