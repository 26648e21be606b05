"""Pin the Kubernetes HPA model: rate limits, tolerance band, 300 s down stabilization.

``HPA`` is the preset (an HPA without a behavior block); ``HPA_BEHAVIOR`` the same
with a ``behavior`` block holding HPA's defaults (autoscaling/v2 behavior)."""

from __future__ import annotations

from skylift.engine import Observations, ScalingPolicy, Series, State, decide

from .plant import cpu_obs

HPA = ScalingPolicy.model_validate({"preset": "hpa", "max": 100})
HPA_BEHAVIOR = ScalingPolicy.model_validate({"preset": "hpa", "max": 100, "behavior": {}})


def test_scale_up_is_limited_to_max_of_100_percent_and_4_replicas_per_15s() -> None:
    samples: list[tuple[float, float]] = []
    state = State(2, 2)
    seen = []
    for now in (0.0, 15.0, 30.0, 45.0):
        samples.append((now, 5.0))  # 500% of request: wants far more than allowed
        decision = decide(HPA_BEHAVIOR, cpu_obs(samples, window=15.0), state, now)
        seen.append(decision.desired)
        assert decision.clamps[-1].stage == "rate limit"
        state = decision.state.with_ready(decision.desired)
    # 2 -> max(2+4, 2*2) = 6 -> max(10, 12) = 12 -> 24 -> 48
    assert seen == [6, 12, 24, 48]


def test_scale_up_inside_the_same_period_counts_earlier_events() -> None:
    samples = [(0.0, 5.0)]
    first = decide(HPA_BEHAVIOR, cpu_obs(samples), State(2, 2), 0.0)
    assert first.desired == 6
    samples.append((5.0, 5.0))
    again = decide(HPA_BEHAVIOR, cpu_obs(samples), first.state.with_ready(6), 5.0)
    # the period started at 2 replicas, so 6 is still the limit 5 s later
    assert again.desired == 6
    assert again.recommended > 6


def _recommended(cpu: float, ready: int = 10) -> int:
    decision = decide(HPA, cpu_obs([(0.0, cpu)]), State(ready, ready), 0.0)
    return decision.recommended


def test_tolerance_band_of_10_percent_around_the_target() -> None:
    assert _recommended(0.76) == 10  # ratio 1.086: inside the band
    assert _recommended(0.78) == 12  # ratio 1.114: ceil(10 * 1.114)
    assert _recommended(0.64) == 10  # ratio 0.914: inside the band
    assert _recommended(0.60) == 9  # ratio 0.857: ceil(8.57)
    assert _recommended(0.70 * 2) == 20  # exactly twice the target, no float noise


def test_average_metric_uses_ready_replicas_and_never_shrinks_while_above_target() -> None:
    # 10 desired but only 4 ready (6 still starting): cpu 100% asks ceil(4 * 1.43) = 6
    decision = decide(HPA, cpu_obs([(0.0, 1.0)]), State(10, 4), 0.0)
    assert decision.recommended == 10
    assert decision.desired == 10


def test_scale_down_waits_for_the_300s_stabilization_window() -> None:
    """With behavior: a recommendation made at t leaves the window at t + 300."""
    samples = [(0.0, 0.7)]
    state = State(10, 10)
    desired_at: dict[float, int] = {}
    now = 0.0
    while now <= 330.0:
        if now > 0:
            samples.append((now, 0.35))  # half the target: recommends 5
        decision = decide(HPA_BEHAVIOR, cpu_obs(samples, window=15.0), state, now)
        desired_at[now] = decision.desired
        state = decision.state.with_ready(decision.desired)
        now += 15.0
    assert all(desired_at[t] == 10 for t in desired_at if t < 300.0)
    assert desired_at[285.0] == 10
    assert desired_at[300.0] == 5  # the t=0 recommendation left the window


def test_a_fresh_state_seeds_the_window_with_the_current_count() -> None:
    # Like Kubernetes after a controller restart: no history means "assume current".
    fresh = decide(HPA, cpu_obs([(60.0, 0.35)]), State(10, 10), 60.0)
    assert fresh.recommended == 5
    assert fresh.desired == 10
    assert fresh.clamps[0].stage == "stabilization"


# --- Each difference between skylift's own semantics and HPA's (issue 15) -----------

_RPS_1 = {"kind": "target", "metric": "rps", "target": 1, "tolerance": "0%"}


def _asking(n: float, now: float = 0.0) -> Observations:
    """An rps target of 1 per replica with 0 % tolerance recommends exactly ``n``."""
    return Observations(window=60.0, rps=Series([now], [n]))


def _with(semantics: str, **fields: object) -> ScalingPolicy:
    return ScalingPolicy.model_validate(
        {"semantics": semantics, "max": 1000, "checks": [_RPS_1], **fields}
    )


def test_percent_scale_up_limit_rounds_as_hpa() -> None:
    up = {"limits": [{"type": "percent", "value": "10%", "period": "60s"}]}
    behavior = {"up": up, "down": {}}
    # HPA: ceil(100 * 1.1) where 100 * 1.1 = 110.00000000000001 -> 111
    assert (
        decide(_with("hpa", behavior=behavior), _asking(200), State(100, 100), 0.0).desired == 111
    )
    assert (
        decide(_with("skylift", behavior=behavior), _asking(200), State(100, 100), 0.0).desired
        == 110
    )


def test_percent_scale_down_limit_truncates_as_hpa() -> None:
    down = {"stabilization": "0s", "limits": [{"type": "percent", "value": "30%", "period": "60s"}]}
    behavior = {"up": {}, "down": down}
    # HPA: int32(90 * 0.7) where 90 * 0.7 = 62.99999999999999 -> 62
    assert decide(_with("hpa", behavior=behavior), _asking(1), State(90, 90), 0.0).desired == 62
    assert decide(_with("skylift", behavior=behavior), _asking(1), State(90, 90), 0.0).desired == 63


def test_out_of_range_count_goes_straight_to_the_bound() -> None:
    behavior = {"up": {}, "down": {"stabilization": "0s", "limits": []}}
    hpa = decide(_with("hpa", max=5, behavior=behavior), _asking(2), State(8, 8), 0.0)
    assert hpa.desired == 5
    assert [(c.stage, c.before, c.after) for c in hpa.clamps] == [("max", 8, 5)]
    assert hpa.state.recommendations == ()  # HPA records no recommendation then
    own = decide(_with("skylift", max=5, behavior=behavior), _asking(2), State(8, 8), 0.0)
    assert own.desired == 2
    below = decide(_with("hpa", min=4, behavior=behavior), _asking(50), State(2, 2), 0.0)
    assert below.desired == 4 and below.clamps[0].stage == "min"


def test_preset_without_behavior_caps_scale_up_at_twice_or_four() -> None:
    assert decide(HPA, cpu_obs([(0.0, 5.0)]), State(3, 3), 0.0).desired == 6
    assert decide(HPA, cpu_obs([(0.0, 5.0)]), State(1, 1), 0.0).desired == 4
    # With HPA's default behavior block: max(+100 %, +4) = 7
    assert decide(HPA_BEHAVIOR, cpu_obs([(0.0, 5.0)]), State(3, 3), 0.0).desired == 7
    own = ScalingPolicy.model_validate({"preset": "hpa", "semantics": "skylift", "max": 100})
    assert decide(own, cpu_obs([(0.0, 5.0)]), State(3, 3), 0.0).desired == 7


def test_preset_without_behavior_keeps_the_window_start_and_records_no_events() -> None:
    samples = [(0.0, 0.7)]
    state = State(10, 10)
    desired_at: dict[float, int] = {}
    for step in range(23):
        now = step * 15.0
        if now > 0:
            samples.append((now, 0.35))
        decision = decide(HPA, cpu_obs(samples, window=15.0), state, now)
        desired_at[now] = decision.desired
        state = decision.state.with_ready(decision.desired)
    # the t=0 recommendation still counts at t=300 (HPA drops only older ones)
    assert desired_at[300.0] == 10
    assert desired_at[315.0] == 5
    assert state.events == ()


def test_tolerance_is_compared_without_a_float_guard() -> None:
    # 77 % over a 70 % target: |1 - 77/70| = 0.10000000000000009 > 0.1, so HPA
    # scales to ceil(1.1 * 10) = 11; skylift reads the ratio as on the band and holds.
    assert decide(HPA, cpu_obs([(0.0, 0.77)]), State(10, 10), 0.0).desired == 11
    own = ScalingPolicy.model_validate({"preset": "hpa", "semantics": "skylift", "max": 100})
    assert decide(own, cpu_obs([(0.0, 0.77)]), State(10, 10), 0.0).desired == 10


def test_utilization_is_a_whole_percent() -> None:
    # 77.99 % is utilization 77 for HPA (integer division): ceil(10 * 77/70) = 11;
    # skylift's own semantics uses the float: ceil(10 * 0.7799/0.7) = 12
    assert decide(HPA, cpu_obs([(0.0, 0.7799)]), State(10, 10), 0.0).recommended == 11
    own = ScalingPolicy.model_validate({"preset": "hpa", "semantics": "skylift", "max": 100})
    assert decide(own, cpu_obs([(0.0, 0.7799)]), State(10, 10), 0.0).recommended == 12


def test_select_policy_min_and_disabled() -> None:
    limits = [
        {"type": "replicas", "value": 4, "period": "60s"},
        {"type": "percent", "value": "100%", "period": "60s"},
    ]
    least = {"up": {"limits": limits, "select": "min"}, "down": {}}
    assert decide(_with("hpa", behavior=least), _asking(100), State(10, 10), 0.0).desired == 14
    off = {"up": {"select": "disabled"}, "down": {"stabilization": "0s", "select": "disabled"}}
    policy = _with("hpa", behavior=off)
    up = decide(policy, _asking(100), State(10, 10), 0.0)
    assert up.desired == 10 and up.clamps[-1].reason == "scale-up disabled (select: disabled)"
    assert decide(policy, _asking(1), State(10, 10), 0.0).desired == 10


def test_zero_replicas_means_autoscaling_off() -> None:
    decision = decide(HPA, cpu_obs([(0.0, 5.0)]), State(0, 0), 0.0)
    assert decision.desired == 0 and decision.direction == "hold"
    assert "autoscaling is off" in decision.reasons[-2]


def test_explain_says_which_semantics_applied() -> None:
    plain = decide(HPA, cpu_obs([(0.0, 0.7)]), State(3, 3), 0.0)
    assert "semantics: Kubernetes HPA without a behavior block" in plain.reasons[-1]
    block = decide(HPA_BEHAVIOR, cpu_obs([(0.0, 0.7)]), State(3, 3), 0.0)
    assert "semantics: Kubernetes HPA with its behavior block" in block.reasons[-1]
    own = ScalingPolicy.model_validate({"preset": "roadmap"})
    assert not any(
        "semantics" in r for r in decide(own, cpu_obs([(0.0, 0.7)]), State(3, 3), 0.0).reasons
    )


def test_a_dumped_preset_reloads_with_no_behavior_block() -> None:
    dumped = HPA.model_dump()
    assert "behavior" not in dumped and dumped["semantics"] == "hpa"
    again = ScalingPolicy.model_validate(dumped)
    assert again.compiled.hpa_no_behavior
    assert ScalingPolicy.model_validate(HPA_BEHAVIOR.model_dump()).hpa_behavior_block
