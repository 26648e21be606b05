"""Growth of daily peaks and the date a capacity limit is hit: pure.

Model: the daily peak grows exponentially, ``peak(t) = peak(0) * exp(g * t)`` with
``t`` in days. ``g`` is the least-squares slope of ``ln(daily peak)`` against the
day, and its 95 % interval is ``g +- t_{0.975, n-2} * se(g)``. The limit is hit
after

    days = ln(capacity / current peak) / g

(0 when the current peak already reaches capacity; never, ``None``, when g <= 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

DAY = 86400.0


@dataclass(frozen=True)
class Growth:
    """Exponential growth per day of the daily peak, with its 95 % interval."""

    rate: float
    low: float
    high: float
    days: int
    """daily peaks fitted"""

    @property
    def doubling_days(self) -> float | None:
        return math.log(2) / self.rate if self.rate > 0 else None


def daily_peaks(times: Sequence[float], values: Sequence[float]) -> list[tuple[float, float]]:
    """(day start, highest value that UTC day) for each day with data, in order."""
    peaks: dict[float, float] = {}
    for t, v in zip(times, values, strict=True):
        day = math.floor(t / DAY) * DAY
        peaks[day] = max(v, peaks.get(day, v))
    return sorted(peaks.items())


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile by the Cornish-Fisher expansion in 1/dof (within 1 % for
    dof >= 3); written out to avoid SciPy for one number."""
    if dof < 1:
        raise ValueError("dof must be at least 1")
    z = NormalDist().inv_cdf(p)
    return (
        z
        + (z**3 + z) / (4 * dof)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
    )


def fit_growth(peaks: Sequence[tuple[float, float]]) -> Growth | None:
    """Fit ``ln(peak) = a + g * day``; None with fewer than 3 positive daily peaks."""
    pts = [(t / DAY, math.log(v)) for t, v in peaks if v > 0]
    n = len(pts)
    if n < 3:
        return None
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    g = sum((x - mx) * (y - my) for x, y in pts) / sxx
    a = my - g * mx
    resid = sum((y - a - g * x) ** 2 for x, y in pts)
    se = math.sqrt(resid / (n - 2) / sxx)
    half = t_quantile(0.975, n - 2) * se
    return Growth(rate=g, low=g - half, high=g + half, days=n)


def days_to_limit(capacity: float, peak: float, rate: float) -> float | None:
    """``ln(capacity / peak) / rate`` days; 0 if already at capacity; None if never."""
    if capacity <= 0 or peak <= 0:
        raise ValueError("capacity and peak must be positive")
    if peak >= capacity:
        return 0.0
    if rate <= 0:
        return None
    return math.log(capacity / peak) / rate


def limit_time(now: float, capacity: float, peak: float, rate: float) -> float | None:
    """Unix time the limit is hit (``now`` + days_to_limit), None if never."""
    days = days_to_limit(capacity, peak, rate)
    return None if days is None else now + days * DAY
