"""SlidingQuantiles: accuracy against numpy and the sliding window."""

from __future__ import annotations

import numpy as np
import pytest

from skylift.metrics.quantiles import SlidingQuantiles

ERROR = 0.02


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.lognormal(mean=-3.0, sigma=1.0, size=n),  # ~50 ms, long tail
        lambda rng, n: rng.exponential(0.2, size=n),
        lambda rng, n: rng.uniform(0.001, 5.0, size=n),
        lambda rng, n: np.concatenate(
            [rng.normal(0.02, 0.002, n // 2), rng.normal(2, 0.1, n // 2)]
        ),
    ],
)
def test_quantiles_within_relative_error_of_numpy(seed: int, draw: object) -> None:
    rng = np.random.default_rng(seed)
    values = np.clip(draw(rng, 5000), 1e-4, None)  # type: ignore[operator]
    sketch = SlidingQuantiles(window=60.0, relative_error=ERROR)
    for i, v in enumerate(values):
        sketch.record(float(v), now=i * 0.01)  # 50 s: all inside the window
    now = len(values) * 0.01
    for q in (0.5, 0.9, 0.95, 0.99, 0.0, 1.0):
        exact = float(np.quantile(values, q, method="lower"))
        got = sketch.quantile(q, now)
        assert got is not None
        assert abs(got - exact) <= ERROR * exact + 1e-12, (q, got, exact)


def test_empty_window_has_no_quantile() -> None:
    sketch = SlidingQuantiles()
    assert sketch.quantile(0.95, now=100.0) is None
    assert sketch.count(100.0) == 0


def test_old_values_slide_out_of_the_window() -> None:
    sketch = SlidingQuantiles(window=60.0, slots=12)
    for i in range(100):
        sketch.record(1.0, now=30.0 + i * 0.05)  # t 30..35: slow
    for i in range(100):
        sketch.record(0.01, now=70.0 + i * 0.05)  # t 70..75: fast
    assert sketch.count(75.0) == 200
    assert sketch.quantile(0.95, now=75.0) == pytest.approx(1.0, rel=ERROR + 1e-9)
    assert sketch.count(95.0) == 100  # the window is now [40, 100)
    assert sketch.quantile(0.95, now=95.0) == pytest.approx(0.01, rel=ERROR + 1e-9)
    assert sketch.quantile(0.95, now=200.0) is None
    assert sketch.count(200.0) == 0


def test_window_granularity_is_one_slot() -> None:
    sketch = SlidingQuantiles(window=60.0, slots=12)  # 5 s slots
    sketch.record(0.5, now=12.0)  # slot [10, 15)
    assert sketch.count(69.9) == 1  # slot [65, 70) is newest: [10, 15) is 12th back
    assert sketch.count(70.0) == 0


def test_zero_values_are_exact_and_extremes_are_clamped() -> None:
    sketch = SlidingQuantiles(min_value=1e-3, max_value=10.0)
    for _ in range(90):
        sketch.record(0.0, now=1.0)  # HAProxy's 0 ms
    for _ in range(10):
        sketch.record(1e6, now=1.0)
    assert sketch.quantile(0.5, now=1.0) == 0.0
    assert sketch.quantile(0.99, now=1.0) == pytest.approx(10.0, rel=ERROR + 1e-9)


def test_late_values_beyond_the_window_are_dropped() -> None:
    sketch = SlidingQuantiles(window=60.0)
    sketch.record(1.0, now=100.0)
    sketch.record(9.0, now=30.0)  # older than the window ending at 100
    sketch.record(2.0, now=95.0)  # late but inside
    assert sketch.count(100.0) == 2
    assert sketch.quantile(1.0, now=100.0) == pytest.approx(2.0, rel=ERROR + 1e-9)


def test_bucket_count_is_small() -> None:
    assert SlidingQuantiles(relative_error=0.02).buckets < 600


@pytest.mark.parametrize(
    "kwargs",
    [{"window": 0}, {"slots": 0}, {"relative_error": 1.0}, {"min_value": 0.0}],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SlidingQuantiles(**kwargs)  # type: ignore[arg-type]
