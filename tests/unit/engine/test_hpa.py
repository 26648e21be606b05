"""Pin the Kubernetes HPA model: rate limits, tolerance band, 300 s down stabilization."""

from __future__ import annotations

from skylift.engine import ScalingPolicy, State, decide

from .plant import cpu_obs

HPA = ScalingPolicy.model_validate({"preset": "hpa", "max": 100})


def test_scale_up_is_limited_to_max_of_100_percent_and_4_replicas_per_15s() -> None:
    samples: list[tuple[float, float]] = []
    state = State(2, 2)
    seen = []
    for now in (0.0, 15.0, 30.0, 45.0):
        samples.append((now, 5.0))  # 500% of request: wants far more than allowed
        decision = decide(HPA, cpu_obs(samples, window=15.0), state, now)
        seen.append(decision.desired)
        assert decision.clamps[-1].stage == "rate limit"
        state = decision.state.with_ready(decision.desired)
    # 2 -> max(2+4, 2*2) = 6 -> max(10, 12) = 12 -> 24 -> 48
    assert seen == [6, 12, 24, 48]


def test_scale_up_inside_the_same_period_counts_earlier_events() -> None:
    samples = [(0.0, 5.0)]
    first = decide(HPA, cpu_obs(samples), State(2, 2), 0.0)
    assert first.desired == 6
    samples.append((5.0, 5.0))
    again = decide(HPA, cpu_obs(samples), first.state.with_ready(6), 5.0)
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
    samples = [(0.0, 0.7)]
    state = State(10, 10)
    desired_at: dict[float, int] = {}
    now = 0.0
    while now <= 330.0:
        if now > 0:
            samples.append((now, 0.35))  # half the target: recommends 5
        decision = decide(HPA, cpu_obs(samples, window=15.0), state, now)
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
