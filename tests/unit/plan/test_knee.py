from __future__ import annotations

import pytest

from skylift.plan.knee import (
    Measured,
    StepResult,
    classify_bottleneck,
    concurrent_users,
    find_knee,
    next_rate,
)

SLO = 500.0


def step(
    rps: float,
    p95: float = 30.0,
    errors: int = 0,
    ok: float | None = None,
    sent: float | None = None,
    lag: float = 1.0,
) -> StepResult:
    return StepResult(
        rps, rps if sent is None else sent, rps if ok is None else ok, p95, errors, lag
    )


def test_knee_is_the_best_pass_under_the_lowest_failure() -> None:
    steps = [step(10), step(20), step(40), step(80, p95=900), step(60, p95=700), step(50)]
    knee = find_knee(steps, SLO)
    assert knee.max_rps == 50
    assert knee.first_fail_rps == 60


def test_errors_or_falling_behind_fail_a_step() -> None:
    assert find_knee([step(10), step(20, errors=1)], SLO).max_rps == 10
    # p95 still under the SLO, but only 80 % served: a queue grew through the step
    assert find_knee([step(10), step(20, ok=16)], SLO).max_rps == 10


def test_a_pass_above_a_failure_is_noise() -> None:
    assert find_knee([step(10), step(20, p95=800), step(30)], SLO).max_rps == 10


def test_untrusted_steps_are_marked_and_not_used() -> None:
    late = step(100, lag=400.0)
    assert step(100, lag=80.0).generator_ok
    short = step(90, sent=50)
    assert not late.generator_ok and not short.generator_ok
    knee = find_knee([step(10), late, short], SLO)
    assert knee.max_rps == 10 and knee.untrusted == 2 and knee.first_fail_rps is None
    assert late.to_dict(SLO)["trusted"] is False


def test_next_rate_doubles_then_bisects_to_resolution() -> None:
    kw = {"start": 5.0, "resolution": 0.05, "ceiling": 1000.0}
    assert next_rate([], SLO, **kw) == 5.0
    steps = [step(5), step(10), step(20), step(40)]
    assert next_rate(steps, SLO, **kw) == 80
    steps.append(step(80, p95=2000))
    assert next_rate(steps, SLO, **kw) == 60
    steps += [step(60, p95=900), step(50)]
    assert next_rate(steps, SLO, **kw) == 55
    steps.append(step(55, errors=3))
    assert next_rate(steps, SLO, **kw) == 52.5
    steps.append(step(52.5))
    assert next_rate(steps, SLO, **kw) is None
    assert next_rate([step(600)], SLO, **kw) is None  # doubling passes the ceiling
    # an untrusted step is retried at the same rate, three in a row stop the search
    assert next_rate([step(5, lag=400.0)], SLO, **kw) == 5.0
    assert next_rate([step(5), step(10, lag=400.0)], SLO, **kw) == 10.0
    assert next_rate([step(5, lag=400.0)] * 3, SLO, **kw) is None
    # a floor known to pass (fewer replicas' knee) when nothing passed yet
    assert next_rate([step(100, p95=900)], SLO, **kw, floor=60.0) == 80


def test_bottleneck_order_and_unknown() -> None:
    assert classify_bottleneck(Measured(replica_cpu_pct=97))[0] == "cpu"
    assert classify_bottleneck(Measured(host_cpu_pct=180, service_cores=2))[0] == "cpu"
    assert classify_bottleneck(Measured(replica_cpu_pct=97, balancer_cpu_pct=95))[0] == "balancer"
    assert (
        classify_bottleneck(
            Measured(replica_cpu_pct=97, db_connections=95, db_max_connections=100)
        )[0]
        == "database connections"
    )
    assert classify_bottleneck(Measured(memory_available_pct=4, replica_cpu_pct=99))[0] == "memory"
    name, evidence = classify_bottleneck(
        Measured(replica_cpu_pct=20, host_cpu_pct=40, service_cores=2)
    )
    assert name == "unknown" and "no measured" in evidence


def test_concurrent_users_by_littles_law() -> None:
    assert concurrent_users(45.0, 5.0, 0.1) == 229
    assert concurrent_users(45.0, 0.0, 0.1) == 4
    with pytest.raises(ValueError):
        concurrent_users(-1.0, 5.0, 0.1)
