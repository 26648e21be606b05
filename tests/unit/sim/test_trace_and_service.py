"""Trace parsing and the M/M/1 service model."""

from __future__ import annotations

import math

import pytest

from skylift.sim import ServiceModel, TraceError, capacity_for_peak, parse_trace


def test_parse_detects_step_and_gaps() -> None:
    trace = parse_trace("t,requests\n0,10\n60,20\n120,30\n300,5\n", "x")
    assert trace.step == 60
    assert trace.gaps == 1
    assert trace.peak_rate == pytest.approx(30 / 60)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,count\n0,1\n1,2\n", "header"),
        ("t,requests\n0,1\n0,2\n", "must increase"),
        ("t,requests\n0,1\n1,x\n", r"x:3"),
        ("t,requests\n0,1\n2,1\n5,1\n", "even"),
        ("t,requests\n0,1\n", "two rows"),
        ("t,requests\n0,1\n1,-4\n", ">= 0"),
    ],
)
def test_bad_traces_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_trace(text, "x")


def test_p95_equals_the_slo_exactly_at_capacity() -> None:
    model = ServiceModel(capacity=100.0, slo=0.5)
    assert model.p95(100.0) == pytest.approx(0.5)
    assert model.p95(50.0) < 0.5 < model.p95(101.0)
    assert model.p95(10_000.0) == model.timeout


def test_demand_is_at_least_one_and_rounds_up() -> None:
    model = ServiceModel(capacity=10.0)
    assert model.demand(0.0) == 1
    assert model.demand(30.0) == 3
    assert model.demand(30.5) == 4


def test_capacity_for_peak() -> None:
    assert capacity_for_peak(500.0, 50) == 10.0
    assert ServiceModel(capacity=10.0).demand(500.0) == 50
    with pytest.raises(ValueError, match="no requests"):
        capacity_for_peak(0.0, 5)
    assert math.isfinite(capacity_for_peak(1e-3, 1))
