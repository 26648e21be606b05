from __future__ import annotations

import math

import pytest

from skylift.plan.growth import (
    DAY,
    daily_peaks,
    days_to_limit,
    fit_growth,
    limit_time,
    t_quantile,
)


def test_daily_peaks_take_each_utc_days_maximum() -> None:
    times = [0.0, 3600.0, DAY + 10, DAY + 20, 3 * DAY]
    assert daily_peaks(times, [1, 5, 2, 7, 3]) == [(0.0, 5), (DAY, 7), (3 * DAY, 3)]


def test_fit_recovers_an_exact_exponential_with_a_zero_width_interval() -> None:
    g = 0.02
    peaks = [(d * DAY, 100 * math.exp(g * d)) for d in range(30)]
    growth = fit_growth(peaks)
    assert growth is not None
    assert growth.rate == pytest.approx(g)
    assert growth.low == pytest.approx(g) and growth.high == pytest.approx(g)
    assert growth.doubling_days == pytest.approx(math.log(2) / g)


def test_noise_widens_the_interval_around_the_rate() -> None:
    noise = [1.1, 0.9, 1.05, 0.95, 1.08, 0.92, 1.0, 1.1, 0.9, 1.0]
    peaks = [(d * DAY, 100 * math.exp(0.01 * d) * n) for d, n in enumerate(noise)]
    growth = fit_growth(peaks)
    assert growth is not None
    assert growth.low < 0.01 < growth.high
    assert growth.high - growth.low > 0.005


def test_too_little_history_fits_nothing() -> None:
    assert fit_growth([(0.0, 1.0), (DAY, 2.0)]) is None


def test_t_quantile_matches_tables() -> None:
    assert t_quantile(0.975, 5) == pytest.approx(2.571, rel=0.01)
    assert t_quantile(0.975, 30) == pytest.approx(2.042, rel=0.002)


def test_limit_date_follows_the_formula_when_growth_or_capacity_change() -> None:
    # days = ln(capacity / peak) / g
    assert days_to_limit(400.0, 100.0, 0.01) == pytest.approx(math.log(4) / 0.01)
    # twice the growth: half the days
    assert days_to_limit(400.0, 100.0, 0.02) == pytest.approx(math.log(4) / 0.02)
    # twice the capacity: ln(2)/g more days
    longer, shorter = days_to_limit(800.0, 100.0, 0.01), days_to_limit(400.0, 100.0, 0.01)
    assert longer is not None and shorter is not None
    assert longer - shorter == pytest.approx(math.log(2) / 0.01)
    assert days_to_limit(100.0, 150.0, 0.01) == 0.0
    assert days_to_limit(400.0, 100.0, 0.0) is None
    assert days_to_limit(400.0, 100.0, -0.01) is None
    assert limit_time(1000.0, 400.0, 100.0, 0.01) == pytest.approx(
        1000.0 + math.log(4) / 0.01 * DAY
    )
    with pytest.raises(ValueError):
        days_to_limit(0.0, 100.0, 0.01)
