"""decide(): combining checks, missing data, fallback, pause, dry run, cooldown, clamps."""

from __future__ import annotations

from typing import Any

import pytest

from skylift.engine import Observations, ScalingPolicy, Series, State, decide

from .plant import cpu_obs


def _policy(*checks: dict[str, Any], **fields: Any) -> ScalingPolicy:
    plain: dict[str, Any] = {"up": {}, "down": {}}  # no stabilization, no rate limits
    return ScalingPolicy.model_validate(
        {"min": 1, "max": 50, "checks": list(checks), "behavior": plain, **fields}
    )


def _obs(cpu: float | None = None, rps: float | None = None, now: float = 0.0) -> Observations:
    return Observations(
        window=60.0,
        cpu=Series([now], [cpu]) if cpu is not None else None,
        rps=Series([now], [rps]) if rps is not None else None,
    )


CPU_UP = {"kind": "threshold", "metric": "cpu", "above": "50%", "change": "+1"}
CPU_UP3 = {"kind": "threshold", "metric": "cpu", "above": "40%", "change": "+3"}
CPU_DOWN = {"kind": "threshold", "metric": "cpu", "below": "30%", "change": "-1"}
RPS_DOWN = {"kind": "threshold", "metric": "rps", "below": 100, "change": "-2"}


def test_any_up_beats_any_down() -> None:
    decision = decide(_policy(CPU_UP, RPS_DOWN), _obs(cpu=0.6, rps=10), State(5, 5), 0.0)
    assert (decision.desired, decision.direction) == (6, "up")


def test_the_larger_up_wins() -> None:
    decision = decide(_policy(CPU_UP, CPU_UP3), _obs(cpu=0.6), State(5, 5), 0.0)
    assert decision.desired == 8


def test_down_needs_every_check_and_takes_the_safest() -> None:
    both = decide(_policy(CPU_DOWN, RPS_DOWN), _obs(cpu=0.1, rps=10), State(5, 5), 0.0)
    assert both.desired == 4  # -1 is safer than -2
    one = decide(_policy(CPU_DOWN, RPS_DOWN), _obs(cpu=0.1, rps=500), State(5, 5), 0.0)
    assert one.desired == 5


def test_a_grouped_high_low_pair_can_scale_down() -> None:
    ungrouped = decide(_policy(CPU_UP, CPU_DOWN), _obs(cpu=0.1), State(5, 5), 0.0)
    assert ungrouped.desired == 5  # the silent high rule vetoes the down
    pair = _policy({**CPU_UP, "group": "cpu"}, {**CPU_DOWN, "group": "cpu"})
    assert decide(pair, _obs(cpu=0.1), State(5, 5), 0.0).desired == 4
    assert decide(pair, _obs(cpu=0.9), State(5, 5), 0.0).desired == 6
    assert decide(pair, _obs(cpu=0.4), State(5, 5), 0.0).direction == "hold"


def test_no_scale_down_while_a_metric_is_missing() -> None:
    policy = _policy(CPU_DOWN, {**RPS_DOWN, "group": "x"})
    decision = decide(policy, _obs(cpu=0.1), State(5, 5), 0.0)
    assert decision.desired == 5
    clamp = decision.clamps[0]
    assert (clamp.stage, clamp.before, clamp.after) == ("missing data", 4, 5)
    assert "rps" in clamp.reason
    assert decision.state.failures == 1
    assert any("no recent rps sample" in r for r in decision.reasons)


def test_a_missing_p95_holds_the_rps_scale_in() -> None:
    """The shipped example's policy: rps target and a p95 rule in one group. rps says
    scale in; with p95 MISSING (a cut log pipeline) the engine holds instead."""
    policy = _policy(
        {"kind": "target", "metric": "rps", "target": 30, "tolerance": "10%", "group": "load"},
        {"kind": "threshold", "metric": "p95_latency", "above": "250ms", "change": "+1",
         "group": "load"},
    )  # fmt: skip
    rps = Series([0.0], [30.0])
    seen = Observations(window=60.0, rps=rps, p95_latency=Series([0.0], [0.05]))
    assert decide(policy, seen, State(5, 5), 0.0).desired == 1  # p95 known and low: scale in
    blind = decide(policy, Observations(window=60.0, rps=rps), State(5, 5), 0.0)
    assert (blind.desired, blind.direction) == (5, "hold")
    assert blind.clamps[0].stage == "missing data" and "p95_latency" in blind.clamps[0].reason
    more = Observations(window=60.0, rps=Series([0.0], [300.0]))
    assert decide(policy, more, State(5, 5), 0.0).desired == 10  # a scale-out still happens


def test_a_sample_outside_the_window_is_missing() -> None:
    stale = Observations(window=60.0, cpu=Series([0.0], [0.1]))
    decision = decide(_policy(CPU_DOWN), stale, State(5, 5), 61.0)
    assert decision.checks[0].action == "missing"
    assert decision.desired == 5


def test_fallback_after_consecutive_failures() -> None:
    policy = _policy(CPU_DOWN, fallback={"after_failures": 2, "replicas": 8})
    state = State(3, 3)
    first = decide(policy, _obs(), state, 0.0)
    assert first.desired == 3 and first.state.failures == 1
    second = decide(policy, _obs(), first.state, 15.0)
    assert second.desired == 8
    assert second.clamps[-1].stage == "fallback"
    recovered = decide(policy, _obs(cpu=0.5, now=30.0), second.state, 30.0)
    assert recovered.state.failures == 0


def test_paused_holds_and_says_so() -> None:
    decision = decide(_policy(CPU_UP, paused=True), _obs(cpu=0.9), State(5, 5), 0.0)
    assert (decision.desired, decision.direction) == (5, "hold")
    assert "paused" in decision.reasons[-1]


def test_dry_run_reports_but_keeps_the_count() -> None:
    decision = decide(_policy(CPU_UP, dry_run=True), _obs(cpu=0.9), State(5, 5), 0.0)
    assert decision.desired == 5
    assert decision.proposed == 6
    assert decision.state.desired == 5 and decision.state.last_up is None
    assert "dry run: would scale to 6, keeping 5" in decision.reasons


def test_cooldown_after_the_last_action() -> None:
    pair = ({**CPU_UP, "group": "cpu"}, {**CPU_DOWN, "group": "cpu"})
    policy = _policy(*pair, behavior={"down": {"cooldown": "5m"}, "up": {}})
    up = decide(policy, _obs(cpu=0.9), State(5, 5), 0.0)
    assert up.desired == 6
    early = decide(policy, _obs(cpu=0.1, now=60.0), up.state, 60.0)
    assert early.desired == 6 and early.clamps[-1].stage == "cooldown"
    late = decide(policy, _obs(cpu=0.1, now=300.0), up.state, 300.0)
    assert late.desired == 5


def test_max_and_min_clamps_keep_the_earlier_value() -> None:
    big = {"kind": "threshold", "metric": "cpu", "above": "50%", "change": "+100"}
    decision = decide(_policy(big, max=10), _obs(cpu=0.9), State(5, 5), 0.0)
    assert decision.desired == 10
    assert [(c.stage, c.before, c.after) for c in decision.clamps] == [("max", 105, 10)]
    assert "policy max is 10" in decision.reasons[-1]
    low = decide(_policy(CPU_DOWN, min=5), _obs(cpu=0.1), State(5, 5), 0.0)
    assert [(c.stage, c.before, c.after) for c in low.clamps] == [("min", 4, 5)]


@pytest.mark.parametrize(
    ("samples", "fires"),
    [
        ([(t, 0.9) for t in range(0, 301, 60)], True),  # above for the whole 5 minutes
        ([(t, 0.9) for t in range(180, 301, 60)], False),  # only the last 2 minutes known
        ([(t, 0.9 if t != 120 else 0.5) for t in range(0, 301, 60)], False),  # one dip
    ],
)
def test_threshold_for_needs_the_whole_duration(
    samples: list[tuple[float, float]], fires: bool
) -> None:
    policy = _policy({**CPU_UP, "for": "5m"})
    decision = decide(policy, cpu_obs(samples), State(5, 5), 300.0)
    assert (decision.desired == 6) is fires


def test_step_bands_pick_the_change() -> None:
    step = {
        "kind": "step",
        "metric": "rps",
        "per_replica": True,
        "bands": [
            {"above": 50, "below": 100, "change": "+1"},
            {"above": 100, "change": "+50%"},
            {"below": 10, "change": "-1"},
        ],
    }
    policy = _policy(step)
    assert decide(policy, _obs(rps=300), State(4, 4), 0.0).desired == 5  # 75/replica
    assert decide(policy, _obs(rps=800), State(4, 4), 0.0).desired == 6  # 200/replica
    assert decide(policy, _obs(rps=20), State(4, 4), 0.0).desired == 3
    assert decide(policy, _obs(rps=120), State(4, 4), 0.0).direction == "hold"


def test_target_on_a_total_is_per_replica() -> None:
    policy = _policy({"kind": "target", "metric": "rps", "target": 40})
    assert decide(policy, _obs(rps=400), State(4, 4), 0.0).desired == 10
    assert decide(policy, _obs(rps=170), State(4, 4), 0.0).desired == 4  # 1.06: tolerance


def test_reasons_explain_every_step() -> None:
    policy = ScalingPolicy.model_validate({"preset": "hpa", "max": 7})
    decision = decide(policy, cpu_obs([(0.0, 3.0)]), State(4, 4), 0.0)
    assert decision.desired == 7
    assert decision.reasons[0] == "scale up from 4 to 7 replicas"
    assert [c.stage for c in decision.clamps] == ["rate limit", "max"]
    assert "cpu 300% vs target 70%" in decision.reasons[1]


def test_a_holding_group_vetoes_another_groups_down() -> None:
    rps_up = {"kind": "threshold", "metric": "rps", "above": 500, "group": "rps"}
    rps_down = {"kind": "threshold", "metric": "rps", "below": 100, "group": "rps"}
    cpu_pair = ({**CPU_UP, "group": "cpu"}, {**CPU_DOWN, "group": "cpu"})
    policy = _policy(*cpu_pair, rps_up, rps_down)
    # rps pair says down, cpu pair (40%, between its bounds) holds: the hold wins
    assert decide(policy, _obs(cpu=0.4, rps=10), State(5, 5), 0.0).desired == 5
    # both pairs say down: the milder down wins
    assert decide(policy, _obs(cpu=0.1, rps=10), State(5, 5), 0.0).desired == 4


def test_rate_limit_period_excludes_its_start() -> None:
    limits = [
        {"type": "replicas", "value": 2, "period": "30s"},
        {"type": "replicas", "value": 100, "period": "60s"},
    ]
    policy = _policy(CPU_UP3, behavior={"up": {"limits": limits, "select": "min"}, "down": {}})
    first = decide(policy, _obs(cpu=0.9), State(5, 5), 0.0)
    assert first.desired == 7  # +3 asked, +2 per 30 s allowed
    inside = decide(policy, _obs(cpu=0.9, now=29.0), first.state, 29.0)
    assert inside.desired == 7 and inside.clamps[-1].stage == "rate limit"
    # like Kubernetes, an event exactly one period old no longer counts
    boundary = decide(policy, _obs(cpu=0.9, now=30.0), first.state, 30.0)
    assert boundary.desired == 9
