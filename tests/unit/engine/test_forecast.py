"""The numpy forecasting models and error measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skylift.engine.forecast import (
    HoltWinters,
    SeasonalNaive,
    fit_holt_winters,
    mape,
    normal_z,
    poisson_upper,
    seasonal_naive,
    under_rate,
)


def test_seasonal_naive_repeats_last_season_or_last_value() -> None:
    assert seasonal_naive([1, 2, 3, 4, 5, 6], 3, 5).tolist() == [4, 5, 6, 4, 5]
    assert seasonal_naive([1, 2], 3, 2).tolist() == [2, 2]
    with pytest.raises(ValueError):
        seasonal_naive([], 3, 2)


def test_holt_winters_learns_a_season_and_forecasts_it() -> None:
    season = 48
    x = np.arange(season * 20)
    y = 10.0 + 3.0 * np.sin(2 * math.pi * x / season)
    model = fit_holt_winters(y, (season,), alpha=0.1, beta=0.0, gamma=0.5, phi=1.0)
    future = np.arange(x[-1] + 1, x[-1] + 1 + season)
    truth = 10.0 + 3.0 * np.sin(2 * math.pi * future / season)
    forecast = np.array([model.predict(int(i)) for i in future])
    assert np.max(np.abs(forecast - truth)) < 0.1


def test_holt_winters_follows_a_level_shift_and_a_gap() -> None:
    model = HoltWinters((), alpha=0.5, beta=0.0, gamma=0.0, phi=1.0)
    for i in range(50):
        model.update(i, 5.0)
    for i in range(50, 70):
        model.update(i, 20.0)
    assert model.predict(70) == pytest.approx(20.0, abs=0.01)
    model.update(200, 20.0)  # a gap: indices may jump
    assert model.last == 200
    with pytest.raises(ValueError):
        model.update(100, 1.0)


def test_holt_winters_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="alpha"):
        HoltWinters((), alpha=1.5)
    with pytest.raises(ValueError, match="phi"):
        HoltWinters((), phi=0.0)


def test_error_measures() -> None:
    assert mape([100, 200, 0], [110, 180, 5]) == pytest.approx(10.0)
    assert math.isnan(mape([0, 0], [1, 1]))
    assert under_rate([1, 2, 3, 4], [2, 2, 2, 2]) == pytest.approx(50.0)


def test_poisson_upper_covers_small_counts() -> None:
    z = normal_z(0.99)
    assert z == pytest.approx(2.326, abs=1e-3)
    # Exact 99 % quantiles of Poisson(1) and Poisson(100) are 4 and 124.
    assert poisson_upper(1.0, z) >= 4
    assert poisson_upper(100.0, z) >= 124
    assert poisson_upper(0.0, z) > 0


def test_online_seasonal_naive_forecasts_one_season_back_else_the_last_value() -> None:
    model = SeasonalNaive(4)
    assert model.predict(0) == 0.0  # nothing learned yet
    for i, y in enumerate([1.0, 2.0, 3.0]):
        model.update(i, y)
    assert model.predict(4) == 1.0  # bucket 0, one season before
    assert model.predict(3) == 3.0  # bucket -1 never seen: the last value
    assert model.update(3, 4.0) == 1.0  # one-step error against that forecast
    assert [model.predict(i) for i in (4, 5, 6, 7, 8)] == [1.0, 2.0, 3.0, 4.0, 1.0]
    model.update(10, 9.0)  # a gap: buckets 8 and 9 are missing
    assert model.predict(12) == 9.0  # bucket 8 is unknown, so naive
    assert model.predict(14) == 9.0  # bucket 10
    assert model.count == 5
    with pytest.raises(ValueError, match="not after"):
        model.update(10, 1.0)
    with pytest.raises(ValueError, match="season"):
        SeasonalNaive(0)
