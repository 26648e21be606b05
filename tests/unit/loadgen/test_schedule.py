"""Schedules: counts, spacing, trace scaling, gaps and speed (pure, no I/O)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from skylift.loadgen import constant_plan, trace_plan
from skylift.loadgen.schedule import (
    Segment,
    constant_schedule,
    schedule_from_segments,
    trace_segments,
)
from skylift.sim.trace import Trace, TraceError, parse_trace


def trace(rows: str) -> Trace:
    return parse_trace("t,requests\n" + rows)


def test_constant_rate_count_and_even_spacing() -> None:
    times = constant_schedule(100, 2.0)
    assert len(times) == 200
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(1.99)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {0.01}


def test_constant_rate_fraction_rounds_up_and_empty_duration() -> None:
    assert len(constant_schedule(3, 1.5)) == 5  # sends at 0, 1/3, ..., 4/3
    assert constant_schedule(10, 0) == []


@pytest.mark.parametrize(("rps", "duration"), [(0, 1), (-1, 1), (1, -1)])
def test_constant_rate_rejects_nonsense(rps: float, duration: float) -> None:
    with pytest.raises(ValueError):
        constant_schedule(rps, duration)


def test_fractions_carry_across_segments() -> None:
    times = schedule_from_segments([Segment(0, 1, 1.5), Segment(1, 2, 1.5)])
    assert times == pytest.approx([0.0, 2 / 3, 4 / 3])


def test_trace_peak_becomes_peak_rps_and_shape_is_kept() -> None:
    segments = trace_segments(trace("0,10\n60,20\n120,5\n"), peak_rps=4, speed=60)
    assert [(s.start, s.end, s.rate) for s in segments] == [(0, 1, 2), (1, 2, 4), (2, 3, 1)]
    times = schedule_from_segments(segments)
    counts = [sum(1 for t in times if i <= t < i + 1) for i in range(3)]
    assert counts == [2, 4, 1]


def test_trace_gap_sends_nothing() -> None:
    # t jumps 60 -> 240: rows 120 and 180 are missing, i.e. no observation.
    gappy = trace("0,10\n60,10\n240,10\n")
    assert gappy.step == 60
    times = schedule_from_segments(trace_segments(gappy, peak_rps=10, speed=60))
    assert len(times) == 30
    assert not [t for t in times if 2 <= t < 4]
    assert sum(1 for t in times if 4 <= t < 5) == 10


def test_speed_compresses_time_at_unchanged_rates() -> None:
    points = trace("0,100\n60,50\n")
    slow = schedule_from_segments(trace_segments(points, peak_rps=10, speed=30))
    fast = schedule_from_segments(trace_segments(points, peak_rps=10, speed=60))
    assert len(slow) == 2 * len(fast) == 30  # 2 s at 10/s + 2 s at 5/s
    assert slow[-1] < 4 and fast[-1] < 2


def test_all_zero_trace_sends_nothing() -> None:
    points = trace("0,0\n60,0\n")
    assert schedule_from_segments(trace_segments(points, peak_rps=10)) == []


def test_limit_cuts_the_schedule() -> None:
    times = schedule_from_segments([Segment(0, 10, 10)], limit=1.0)
    assert len(times) == 10
    assert max(times) < 1.0


def test_trace_plan_from_file(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,requests\n0,30\n60,60\n\n")
    plan = trace_plan("http://127.0.0.1:1", "/", trace, peak_rps=20, speed=60)
    assert len(plan.send_times) == 10 + 20
    assert plan.duration < 2.0
    capped = trace_plan("http://127.0.0.1:1", "/", trace, 20, speed=60, max_duration=1.0)
    assert len(capped.send_times) == 10


def test_trace_plan_passes_trace_errors_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,count\n0,1\n60,2\n")
    with pytest.raises(TraceError, match="header"):
        trace_plan("http://127.0.0.1:1", "/", bad, peak_rps=10)


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="http"):
        constant_plan("127.0.0.1:8080", "/", 1, 1)
    with pytest.raises(ValueError, match="path"):
        constant_plan("http://127.0.0.1:8080", "work", 1, 1)
    with pytest.raises(ValueError, match="max_in_flight"):
        constant_plan("http://127.0.0.1:8080", "/", 1, 1, max_in_flight=0)
