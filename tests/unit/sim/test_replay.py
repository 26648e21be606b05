"""The replay loop: elasticity scores, gaps, timeline, chart, and the shared decide."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

import skylift.engine
import skylift.sim.replay
from skylift.engine import ScalingPolicy
from skylift.sim import (
    ServiceModel,
    load_trace,
    parse_trace,
    preset_policy,
    render_chart,
    simulate,
)

TRACES = Path(__file__).resolve().parents[3].parent / "shared" / "traces"


def _trace(rates: Sequence[float], step: int = 60, start: int = 0) -> str:
    rows = [f"{start + i * step},{r * step}" for i, r in enumerate(rates)]
    return "t,requests\n" + "\n".join(rows) + "\n"


def test_the_simulator_calls_the_engines_decide() -> None:
    assert vars(skylift.sim.replay)["decide"] is skylift.engine.decide


def test_oracle_is_the_physical_limit() -> None:
    trace = parse_trace(_trace([10, 30, 30, 5]), "t")
    result = simulate(trace, "oracle", ServiceModel(capacity=10.0))
    assert result.cost_ratio == 1.0
    assert (result.theta_u_pct, result.theta_o_pct, result.tau_u_pct) == (0.0, 0.0, 0.0)
    assert result.actions == 2  # 1 -> 3 -> 1 replicas
    assert result.timeline.demand == [1, 3, 3, 1]


def test_elasticity_scores_by_hand() -> None:
    # Paused at 2 replicas; demand 1 for one minute, 4 for one minute.
    trace = parse_trace(_trace([10, 40]), "t")
    paused = ScalingPolicy.model_validate({"preset": "hpa", "min": 2, "paused": True})
    result = simulate(trace, paused, ServiceModel(capacity=10.0, startup=0.0))
    assert result.timeline.ready == [2, 2]
    assert result.theta_o_pct == pytest.approx(100 * (1 / 1) / 2)  # +1 over a demand of 1
    assert result.theta_u_pct == pytest.approx(100 * (2 / 4) / 2)  # -2 under a demand of 4
    assert result.tau_o_pct == pytest.approx(50.0)
    assert result.tau_u_pct == pytest.approx(50.0)
    assert result.slo_violation_minutes == pytest.approx(1.0)
    assert result.replica_hours == pytest.approx(2 * 2 / 60)
    assert result.oracle_replica_hours == pytest.approx((1 + 4) / 60)


def test_startup_delay_leaves_a_step_under_provisioned() -> None:
    trace = parse_trace(_trace([10] * 10 + [100] * 20), "t")
    model = ServiceModel(capacity=10.0, startup=120.0)
    result = simulate(trace, preset_policy("hpa", 10.0, 10), model)
    jump = 10
    assert result.timeline.ready[jump] < result.timeline.demand[jump]
    assert result.timeline.ready[-1] >= 10  # caught up by the end
    assert result.slo_violation_minutes >= 2.0  # at least the start-up delay


def test_a_gap_is_no_observation_not_zero_demand() -> None:
    rates = [50] * 10
    text = _trace(rates) + "\n".join(f"{3600 + i * 60},{50 * 60}" for i in range(10)) + "\n"
    trace = parse_trace(text, "gap")
    model = ServiceModel(capacity=10.0, startup=0.0)
    result = simulate(trace, preset_policy("hpa", 10.0, 5), model)
    assert trace.gaps == 1
    assert result.observed_hours == pytest.approx(20 / 60)
    # replicas kept through the 50-minute gap are paid for; no scale-down in the dark
    assert result.replica_hours > result.observed_hours * 5
    assert min(result.timeline.ready) >= 5
    assert len(result.timeline.t) == 20


def test_timeline_csv_and_chart() -> None:
    trace = parse_trace(_trace([10, 20, 30]), "small")
    result = simulate(trace, "oracle", ServiceModel(capacity=10.0))
    assert result.timeline.to_csv().splitlines() == [
        "t,demand,desired,ready,paid",
        "0,1,1,1,1",
        "60,2,2,2,2",
        "120,3,3,3,3",
    ]
    page = render_chart(result)
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert page.count("<polyline") == 4


def test_whole_second_interval_is_required() -> None:
    trace = parse_trace(_trace([10, 20]), "t")
    with pytest.raises(ValueError, match="whole-second"):
        simulate(trace, preset_policy("hpa", 10.0, 2), ServiceModel(10.0), interval=7.5)


@pytest.mark.skipif(not TRACES.is_dir(), reason=f"shared traces folder {TRACES} is absent")
def test_nab_elb_replay_with_its_missing_samples() -> None:
    trace = load_trace(TRACES / "nab_elb.csv")
    assert trace.gaps > 0
    capacity = trace.peak_rate / 50
    model = ServiceModel(capacity=capacity, startup=60.0)
    hpa = simulate(trace, preset_policy("hpa", capacity, 50), model)
    oracle = simulate(trace, "oracle", model)
    assert len(hpa.timeline.t) == len(trace.times)
    assert hpa.observed_hours < (trace.times[-1] - trace.times[0]) / 3600 + 1
    assert hpa.cost_ratio > 1.0  # target 70% keeps headroom above the oracle
    assert oracle.actions > 0 and hpa.decisions > 0
