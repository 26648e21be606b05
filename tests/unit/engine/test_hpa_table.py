"""Kubernetes' own HPA table tests, re-encoded as numbers and fed through ``decide``.

Source: kubernetes/kubernetes ``pkg/controller/podautoscaler/horizontal_test.go``
(TestScalingWithRules, TestNormalizeDesiredReplicasWithBehavior,
TestNormalizeDesiredReplicas). Only inputs and expected counts are taken; each
vector is named after its upstream case. Every vector runs a ``semantics: hpa``
policy whose only check recommends exactly the upstream "prenormalized" count
(an ``rps`` target of 1 per replica with 0 % tolerance, fed that many requests/s).

Not re-encoded, because skylift cannot express it: the TestScalingWithRules case
"prenormalized desired replicas within range when minReplicas is 0" (skylift's
``min`` is at least 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from skylift.engine import Observations, ScalingPolicy, Series, State, decide
from skylift.engine.metrics import parse_metric_value

NOW = 10_000.0

Rules = tuple[int, int, int, int]
"""(pods, pods period s, percent, percent period s); a 0 value means no such policy,
as upstream's ``generateScalingRules`` builds them."""


def _limits(rules: Rules) -> list[dict[str, Any]]:
    pods, pods_period, percent, percent_period = rules
    out: list[dict[str, Any]] = []
    if pods:
        out.append({"type": "replicas", "value": pods, "period": f"{pods_period}s"})
    if percent:
        out.append({"type": "percent", "value": f"{percent}%", "period": f"{percent_period}s"})
    return out


def _spread(changes: tuple[int, ...], sign: int) -> list[tuple[float, int]]:
    """Upstream's ``generateEventsUniformDistribution`` over 120 s: event i sits in
    the middle of the i-th of ``len(changes)`` equal segments, oldest first."""
    if not changes:
        return []
    segment = 120.0 / len(changes)
    return [
        (NOW - (120.0 - segment * (i + 1) + segment / 2.0), sign * change)
        for i, change in enumerate(changes)
    ]


def _recommends(desired: int) -> Observations:
    return Observations(window=60.0, rps=Series([NOW], [float(desired)]))


_CHECK = {"kind": "target", "metric": "rps", "target": 1, "tolerance": "0%"}


@dataclass(frozen=True)
class RateCase:
    """TestScalingWithRules: the rate stage (convertDesiredReplicasWithBehaviorRate).

    ``up``/``down`` None = HPA's default rules for that direction. Upstream calls
    the rate stage alone, so the stabilization windows are 0 here.
    """

    name: str
    min: int
    max: int
    current: int
    desired: int
    expected: int
    up: Rules | None = None
    down: Rules | None = None
    up_events: tuple[int, ...] = ()
    down_events: tuple[int, ...] = ()


RATE_CASES = (
    RateCase("prenormalized desired replicas within range", 3, 8, 5, 7, 7),
    RateCase("prenormalized desired replicas < minReplicas", 2, 8, 3, 1, 2),
    RateCase("maxReplicas is the limit because maxReplicas < scaleUpLimit", 1, 10, 20, 1000, 10),
    RateCase(
        "desired replica count is more than the maximum replica count", 100, 150, 100, 1000, 150
    ),
    RateCase(
        "scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies",
        1,
        2000,
        3,
        1000,
        4,
        up=(0, 0, 1, 60),
    ),
    # Upstream marks this one testThis (skipped); its numbers hold all the same.
    RateCase(
        "scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies",  # noqa: E501
        3,
        2000,
        1000,
        3,
        980,
        down=(20, 60, 0, 0),
    ),
    RateCase("scaleUp with default behavior", 1, 1000, 10, 50, 20),
    RateCase(
        "scaleUp with pods policy larger than percent policy",
        1,
        1000,
        10,
        500,
        110,
        up=(100, 60, 100, 60),
    ),
    RateCase(
        "scaleUp with percent policy larger than pods policy",
        1,
        1000,
        10,
        500,
        20,
        up=(2, 60, 100, 60),
    ),
    RateCase(
        "scaleUp with spec MaxReplicas limitation with large pod policy",
        1,
        1000,
        10,
        50,
        50,
        up=(100, 60, 0, 0),
    ),
    RateCase(
        "scaleUp with spec MaxReplicas limitation with large percent policy",
        1,
        1000,
        10,
        50,
        50,
        up=(10000, 60, 0, 0),
    ),
    RateCase("scaleUp with pod policy limitation", 1, 1000, 10, 50, 40, up=(30, 60, 0, 0)),
    RateCase("scaleUp with percent policy limitation", 1, 1000, 10, 50, 30, up=(0, 0, 200, 60)),
    RateCase(
        "scaleDown with percent policy larger than pod policy",
        1,
        1000,
        100,
        2,
        80,
        down=(20, 60, 1, 60),
    ),
    RateCase(
        "scaleDown with pod policy larger than percent policy",
        1,
        1000,
        100,
        2,
        98,
        down=(2, 60, 1, 60),
    ),
    RateCase(
        "scaleDown with spec MinReplicas=nil limitation with large pod policy",
        1,
        1000,
        10,
        0,
        1,
        down=(100, 60, 0, 0),
    ),
    RateCase(
        "scaleDown with spec MinReplicas limitation with large pod policy",
        1,
        1000,
        10,
        0,
        1,
        down=(100, 60, 0, 0),
    ),
    RateCase(
        "scaleDown with spec MinReplicas limitation with large percent policy",
        5,
        1000,
        10,
        2,
        5,
        down=(0, 0, 100, 60),
    ),
    RateCase("scaleDown with pod policy limitation", 1, 1000, 10, 2, 5, down=(5, 60, 0, 0)),
    RateCase("scaleDown with percent policy limitation", 1, 1000, 10, 5, 5, down=(0, 0, 50, 60)),
    RateCase(
        "scaleUp with spec MaxReplicas limitation with large pod policy and events",
        1,
        200,
        100,
        500,
        200,
        up=(300, 60, 0, 0),
        up_events=(1, 5, 9),
    ),
    RateCase(
        "scaleUp with spec MaxReplicas limitation with large percent policy and events",
        1,
        200,
        100,
        500,
        200,
        up=(0, 0, 10000, 60),
        up_events=(1, 5, 9),
    ),
    RateCase(
        "scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",  # noqa: E501
        1,
        1000,
        100,
        500,
        100,
        up=(5, 120, 0, 0),
        up_events=(1, 5, 9),
    ),
    RateCase(
        "scaleUp with pod policy and previous scale up events",
        1,
        1000,
        100,
        500,
        235,
        up=(150, 120, 0, 0),
        up_events=(1, 5, 9),
    ),
    RateCase(
        "scaleUp with percent policy and previous scale up events",
        1,
        1000,
        100,
        500,
        255,
        up=(0, 0, 200, 120),
        up_events=(1, 5, 9),
    ),
    RateCase(
        "scaleUp with percent policy and previous scale up and down events",
        1,
        1000,
        6,
        24,
        16,
        up=(0, 0, 300, 300),
        up_events=(4,),
        down_events=(2,),
    ),
    RateCase(
        "scaleDown with default policy and previous events",
        1,
        1000,
        10,
        5,
        5,
        down_events=(1, 5, 9),
    ),
    RateCase(
        "scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events",
        1,
        1000,
        100,
        0,
        1,
        down=(115, 120, 0, 0),
        down_events=(1, 5, 9),
    ),
    RateCase(
        "scaleDown with spec MinReplicas limitation with large pod policy and previous events",
        5,
        1000,
        100,
        0,
        5,
        down=(130, 120, 0, 0),
        down_events=(1, 5, 9),
    ),
    RateCase(
        "scaleDown with spec MinReplicas limitation with large percent policy and previous events",
        5,
        1000,
        100,
        2,
        5,
        down=(0, 0, 100, 120),
        down_events=(1, 5, 9),
    ),
    RateCase(
        "scaleDown with pod policy limitation and previous events",
        1,
        1000,
        100,
        2,
        100,
        down=(5, 120, 0, 0),
        down_events=(1, 5, 9),
    ),
    RateCase(
        "scaleDown with percent policy limitation and previous events",
        1,
        1000,
        100,
        0,
        56,
        down=(0, 0, 50, 120),
        down_events=(2, 4, 6),
    ),
    RateCase(
        "scaleDown with percent policy and previous scale up and down events",
        1,
        1000,
        10,
        1,
        6,
        down=(0, 0, 50, 180),
        up_events=(2,),
        down_events=(4,),
    ),
    RateCase(
        "scaleDown with previous events preventing further scale down",
        1,
        1000,
        100,
        0,
        100,
        down=(0, 0, 10, 120),
        down_events=(10, 10, 10),
    ),
    RateCase(
        "scaleDown with with previous events still allowing more scale down",
        1,
        1000,
        10,
        5,
        5,
        down=(0, 0, 1000, 120),
        down_events=(10, 10, 10),
    ),
    RateCase(
        "check 'outdated' flag for events for one behavior for up",
        1,
        1000,
        100,
        200,
        200,
        up=(1000, 60, 0, 0),
        up_events=(8, 12, 9, 11),
    ),
    RateCase(
        "check that events were not marked 'outdated' for two different policies in the behavior for up",  # noqa: E501
        1,
        1000,
        100,
        200,
        200,
        up=(1000, 120, 100, 60),
        up_events=(8, 12, 9, 11),
    ),
    RateCase(
        "check that events were marked 'outdated' for two different policies in the behavior for up",  # noqa: E501
        1,
        1000,
        100,
        200,
        200,
        up=(1000, 30, 100, 60),
        up_events=(8, 12, 9, 11),
    ),
    RateCase(
        "check 'outdated' flag for events for one behavior for down",
        1,
        1000,
        100,
        5,
        5,
        down=(1000, 60, 0, 0),
        down_events=(8, 12, 9, 11),
    ),
    RateCase(
        "check that events were not marked 'outdated' for two different policies in the behavior for down",  # noqa: E501
        1,
        1000,
        100,
        5,
        5,
        down=(1000, 120, 100, 60),
        down_events=(8, 12, 9, 11),
    ),
    RateCase(
        "check that events were marked 'outdated' for two different policies in the behavior for down",  # noqa: E501
        1,
        1000,
        100,
        5,
        5,
        down=(1000, 30, 100, 60),
        down_events=(8, 12, 9, 11),
    ),
)


def _direction(rules: Rules | None, default: dict[str, Any]) -> dict[str, Any]:
    body = dict(default) if rules is None else {"limits": _limits(rules), "select": "max"}
    return {**body, "stabilization": "0s"}


_DEFAULT_UP = {
    "select": "max",
    "limits": [
        {"type": "percent", "value": "100%", "period": "15s"},
        {"type": "replicas", "value": 4, "period": "15s"},
    ],
}
_DEFAULT_DOWN = {"select": "max", "limits": [{"type": "percent", "value": "100%", "period": "15s"}]}


@pytest.mark.parametrize("case", RATE_CASES, ids=lambda c: c.name)
def test_scaling_with_rules(case: RateCase) -> None:
    policy = ScalingPolicy.model_validate(
        {
            "semantics": "hpa",
            "min": case.min,
            "max": case.max,
            "checks": [_CHECK],
            "behavior": {
                "up": _direction(case.up, _DEFAULT_UP),
                "down": _direction(case.down, _DEFAULT_DOWN),
            },
        }
    )
    events = tuple(sorted(_spread(case.up_events, 1) + _spread(case.down_events, -1)))
    state = (
        State(case.current, case.current, events=events)
        if events
        else State(case.current, case.current)
    )
    decision = decide(policy, _recommends(case.desired), state, NOW)
    assert decision.desired == case.expected


@dataclass(frozen=True)
class StabilizeCase:
    """TestNormalizeDesiredReplicasWithBehavior: the stabilization stage alone
    (no rate-limit policies), ``history`` as (recommendation, seconds ago)."""

    name: str
    history: tuple[tuple[int, float], ...]
    current: int
    desired: int
    expected: int
    up_window: int = 0
    down_window: int = 0


STABILIZE_CASES = (
    StabilizeCase("empty recommendations for scaling down", (), 100, 5, 5),
    StabilizeCase(
        "simple scale down stabilization", ((4, 120), (5, 60)), 100, 3, 5, down_window=180
    ),
    StabilizeCase("simple scale up stabilization", ((4, 120), (5, 60)), 1, 7, 4, up_window=300),
    StabilizeCase("no scale down stabilization", ((1, 120), (2, 60)), 100, 3, 3, up_window=300),
    StabilizeCase("no scale up stabilization", ((4, 120), (5, 60)), 1, 3, 3, down_window=300),
    StabilizeCase(
        "no scale down stabilization, reuse recommendation element",
        ((10, 600), (9, 540)),
        100,
        3,
        3,
    ),
    StabilizeCase(
        "no scale up stabilization, reuse recommendation element",
        ((10, 600), (9, 540)),
        1,
        100,
        100,
    ),
    StabilizeCase(
        "scale down stabilization, reuse one of obsolete recommendation element",
        ((10, 600), (4, 60), (5, 120), (9, 540)),
        100,
        3,
        5,
        down_window=180,
    ),
    StabilizeCase(
        "scale up stabilization, reuse one of obsolete recommendation element",
        ((10, 6000), (6, 60), (5, 120), (9, 180)),
        1,
        100,
        5,
        up_window=300,
    ),
    StabilizeCase(
        "scale up and down stabilization, do not scale up when prenormalized rec goes down",
        ((2, 6000), (3, 180)),
        2,
        1,
        2,
        up_window=300,
        down_window=300,
    ),
    StabilizeCase(
        "scale up and down stabilization, do not scale down when prenormalized rec goes up",
        ((2, 6000), (1, 180)),
        2,
        3,
        2,
        up_window=300,
        down_window=300,
    ),
)


def _history(pairs: tuple[tuple[int, float], ...]) -> tuple[tuple[float, int], ...]:
    return tuple(sorted((NOW - ago, rec) for rec, ago in pairs))


@pytest.mark.parametrize("case", STABILIZE_CASES, ids=lambda c: c.name)
def test_normalize_desired_replicas_with_behavior(case: StabilizeCase) -> None:
    policy = ScalingPolicy.model_validate(
        {
            "semantics": "hpa",
            "min": 1,
            "max": 1000,
            "checks": [_CHECK],
            "behavior": {
                "up": {"stabilization": f"{case.up_window}s", "limits": []},
                "down": {"stabilization": f"{case.down_window}s", "limits": []},
            },
        }
    )
    state = State(case.current, case.current, recommendations=_history(case.history))
    decision = decide(policy, _recommends(case.desired), state, NOW)
    assert decision.desired == case.expected


LEGACY_CASES = (
    ("empty log", (), 5, 5),
    ("stabilize", ((4, 120), (5, 60)), 3, 5),
    ("no stabilize", ((1, 120), (2, 60)), 3, 3),
    ("no stabilize - old recommendations", ((10, 600), (9, 540)), 3, 3),
    ("stabilize - old recommendations", ((10, 600), (4, 60), (5, 120), (9, 540)), 3, 5),
)
"""TestNormalizeDesiredReplicas: an HPA without a behavior block keeps the highest
recommendation of the controller's 5-minute window. Upstream calls the window
alone with no current count; here the current count is 3 (the controller seeds an
empty log with it, and 3 is at or below every expected count)."""


@pytest.mark.parametrize(
    ("name", "history", "desired", "expected"),
    LEGACY_CASES,
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_normalize_desired_replicas_without_behavior(
    name: str, history: tuple[tuple[int, float], ...], desired: int, expected: int
) -> None:
    policy = ScalingPolicy.model_validate({"semantics": "hpa", "max": 100, "checks": [_CHECK]})
    state = State(3, 3, recommendations=_history(history))
    decision = decide(policy, _recommends(desired), state, NOW)
    assert decision.desired == expected, name


TOLERANCE_CASES = (
    # (upstream case, metric, observed value, target, current replicas, expected)
    ("TestReplicaCalcTolerance", "cpu", "102%", "100%", 3, 3),
    ("TestReplicaCalcToleranceCM", "rps", 62.0, 20.0, 3, 3),
    ("TestReplicaCalcToleranceCMObject", "p95_latency", 20.666, 20.0, 3, 3),
    ("TestReplicaCalcToleranceCMExternal", "p95_latency", 8.6, 8.888, 3, 3),
    ("TestReplicaCalcTolerancePerPodCMExternal", "rps", 8.6, 2.9, 3, 3),
    ("TestReplicaCalcComputedToleranceAlgImplementation (scale)", "cpu", "50%", "56%", 10, 9),
    ("TestReplicaCalcComputedToleranceAlgImplementation (unscaling)", "cpu", "50%", "55%", 10, 10),
)
"""replica_calculator_test.go's tolerance cases (10 %), every pod ready. A pod
metric (``qps`` per pod) is a service total here (``rps``, target per replica);
an object or external ``Value`` metric is one value against its target, which
skylift's per-replica ``p95_latency`` check computes the same way."""


@pytest.mark.parametrize(
    ("name", "metric", "value", "target", "current", "expected"),
    TOLERANCE_CASES,
    ids=[c[0] for c in TOLERANCE_CASES],
)
def test_replica_calc_tolerance(
    name: str, metric: str, value: object, target: object, current: int, expected: int
) -> None:
    check = {"kind": "target", "metric": metric, "target": target, "tolerance": "10%"}
    policy = ScalingPolicy.model_validate(
        {"semantics": "hpa", "max": 100, "checks": [check], "behavior": {"down": {}}}
    )
    sample = parse_metric_value(metric, value)
    obs = Observations(window=60.0, **{metric: Series([NOW], [sample])})  # type: ignore[arg-type]
    decision = decide(policy, obs, State(current, current), NOW)
    assert decision.recommended == expected, name
