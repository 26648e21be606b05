"""A tiny closed loop for engine tests: replicas become ready instantly and
cpu = load / ready (load in replica units), sampled once per decision."""

from __future__ import annotations

from collections.abc import Callable

from skylift.engine import Decision, Observations, ScalingPolicy, Series, State, decide


def run_loop(
    policy: ScalingPolicy,
    load: Callable[[float], float],
    steps: int,
    start: int | None = None,
    interval: float = 15.0,
) -> list[Decision]:
    """Decide ``steps`` times; returns every decision."""
    times: list[float] = []
    cpu: list[float] = []
    rps: list[float] = []
    obs = Observations(window=interval, cpu=Series(times, cpu), rps=Series(times, rps))
    first = start if start is not None else policy.min
    state = State(first, first)
    out: list[Decision] = []
    for i in range(steps):
        now = i * interval
        times.append(now)
        cpu.append(load(now) / max(state.desired, 1))
        rps.append(load(now) * 100.0)
        decision = decide(policy, obs, state, now)
        out.append(decision)
        state = decision.state.with_ready(decision.desired)
    return out


def cpu_obs(samples: list[tuple[float, float]], window: float = 60.0) -> Observations:
    """Observations holding only a cpu series."""
    return Observations(
        window=window,
        cpu=Series([t for t, _ in samples], [v for _, v in samples]),
    )
