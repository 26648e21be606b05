"""The timeline's ``paid`` column: cost can be checked from the timeline alone."""

from __future__ import annotations

import csv
import io

import pytest

from skylift.sim import ServiceModel, parse_trace, preset_policy, simulate
from skylift.sim.result import SimResult


def _rows(result: SimResult) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(result.timeline.to_csv())))


def _hours(rows: list[dict[str, str]], step: int) -> float:
    return sum(float(r["paid"]) for r in rows) * step / 3600.0


def test_paid_column_reproduces_the_cost_ratio() -> None:
    rates = [10] * 20 + [80] * 30 + [20] * 30 + [60] * 10
    text = "t,requests\n" + "".join(f"{i * 60},{r * 60}\n" for i, r in enumerate(rates))
    # a 50-minute gap: billing runs on through it, and the next row carries it
    text += "".join(f"{(len(rates) + 50 + i) * 60},{40 * 60}\n" for i in range(10))
    trace = parse_trace(text, "steps")
    model = ServiceModel(capacity=10.0, startup=90.0)
    run = simulate(trace, preset_policy("hpa", 10.0, 8), model, interval=15.0)
    oracle = simulate(trace, "oracle", model)
    run_rows, oracle_rows = _rows(run), _rows(oracle)
    assert run.replica_hours == pytest.approx(_hours(run_rows, 60))
    assert oracle.replica_hours == pytest.approx(_hours(oracle_rows, 60))
    ratio = _hours(run_rows, 60) / _hours(oracle_rows, 60)
    assert ratio == pytest.approx(run.cost_ratio) and ratio > 1.0
    # paid = ready + starting: above ready while replicas boot, never below it
    assert all(float(r["paid"]) >= int(r["ready"]) for r in run_rows[:90])
    assert any(float(r["paid"]) > int(r["ready"]) for r in run_rows)
    # a fractional average where the count changed mid-row (15 s ticks in 60 s rows)
    assert any(not float(r["paid"]).is_integer() for r in run_rows)
