"""Percentiles and the recorder's bookkeeping."""

from __future__ import annotations

import random

import numpy as np
import pytest

from skylift.loadgen import percentile
from skylift.loadgen.report import OVERLOAD_CLIENT, TIMEOUT, Recorder


def test_percentile_known_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0) == 1
    assert percentile(values, 50) == 50.5
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(42)
    values = sorted(rng.expovariate(1.0) for _ in range(1001))
    for q in (50, 95, 99, 99.9):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_recorder_counts_add_up_and_kinds_are_named() -> None:
    rec = Recorder(planned=6)
    rec.sent = 6
    rec.response(200, 0.010, "a")
    rec.response(200, 0.020, "b")
    rec.response(204, 0.030, None)
    rec.response(503, 0.040, "a")
    rec.error(TIMEOUT, 5.0)
    rec.error(OVERLOAD_CLIENT, None)
    report = rec.report(target="http://x", path="/", duration=2.0, stopped_early=False)
    assert report.ok == 3
    assert report.errors == 3
    assert report.ok + report.errors == report.sent
    assert report.errors_by_kind == {"http_503": 1, "overload_client": 1, "timeout": 1}
    assert report.replicas == {"a": 2, "b": 1}
    assert report.max_ms == 5000.0
    assert report.p50_ms == pytest.approx(30.0)
    assert report.throughput == 1.5
    data = report.to_dict()
    for key in ("sent", "ok", "errors", "p50_ms", "p95_ms", "p99_ms", "errors_by_kind", "rate"):
        assert key in data


def test_client_lag_is_not_counted_as_a_failure_of_the_server() -> None:
    """overload_client means the client fell behind: client_errors, never failed."""
    rec = Recorder(planned=5)
    rec.sent = 5
    rec.response(200, 0.010, "a")
    rec.error(OVERLOAD_CLIENT, None)
    rec.response(408, 10.0, None)  # HAProxy gave up waiting for the client's request
    clean = rec.report(target="http://x", path="/", duration=1.0, stopped_early=False)
    assert (clean.errors, clean.failed, clean.client_errors) == (2, 0, 2)
    rec.error(TIMEOUT, 5.0)
    rec.response(502, 0.020, None)
    broken = rec.report(target="http://x", path="/", duration=1.0, stopped_early=False)
    assert (broken.errors, broken.failed, broken.client_errors) == (4, 2, 2)
    assert broken.to_dict()["failed"] == 2 and broken.to_dict()["client_errors"] == 2
