"""ScalingPolicy: the YAML shape, presets, units and error messages."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from skylift.engine import ScalingPolicy, StepCheck, TargetCheck, ThresholdCheck

EXAMPLE = """
min: 2
max: 20
interval: 15s
checks:
  - kind: target
    metric: cpu
    target: 70%
  - kind: threshold
    metric: p95_latency
    above: 500ms
    for: 1m
    change: +2
  - kind: step
    metric: queue
    per_replica: true
    bands:
      - {above: 10, below: 50, change: +1}
      - {above: 50, change: +50%}
behavior:
  down:
    stabilization: 5m
    cooldown: 2m
    limits:
      - {type: replicas, value: 2, period: 1m}
fallback: {after_failures: 4, replicas: 6}
"""


def test_example_yaml_parses_with_units() -> None:
    policy = ScalingPolicy.model_validate(yaml.safe_load(EXAMPLE))
    target, threshold, step = policy.checks
    assert isinstance(target, TargetCheck)
    assert target.target == pytest.approx(0.7)
    assert target.tolerance == pytest.approx(0.1)
    assert isinstance(threshold, ThresholdCheck)
    assert threshold.above == pytest.approx(0.5)
    assert threshold.for_ == 60.0
    assert str(threshold.effective_change) == "+2"
    assert isinstance(step, StepCheck)
    assert step.bands[1].change.apply(10) == 15
    assert policy.behavior.down.stabilization == 300.0
    assert policy.behavior.down.limits[0].value == 2
    # up keeps the Kubernetes default when only down is given
    assert [lim.type for lim in policy.behavior.up.limits] == ["percent", "replicas"]
    assert policy.fallback is not None and policy.fallback.replicas == 6


def test_round_trip_through_json_dump() -> None:
    policy = ScalingPolicy.model_validate(yaml.safe_load(EXAMPLE))
    dumped = policy.model_dump(mode="json", by_alias=True)
    assert dumped["checks"][1]["for"] == "1m"
    assert ScalingPolicy.model_validate(dumped) == policy


def test_fractions_above_100_percent_round_trip() -> None:
    policy = ScalingPolicy.model_validate(
        {
            "checks": [
                {"kind": "target", "metric": "cpu", "target": "150%"},
                {"kind": "threshold", "metric": "memory", "above": 0.85},
                {"kind": "step", "metric": "cpu", "bands": [{"above": "120%", "change": "+1"}]},
            ]
        }
    )
    dumped = policy.model_dump(mode="json", by_alias=True)
    assert dumped["checks"][0]["target"] == "150%"
    assert dumped["checks"][1]["above"] == "85%"
    assert dumped["checks"][2]["bands"][0]["above"] == "120%"
    assert ScalingPolicy.model_validate(dumped) == policy


@pytest.mark.parametrize("value", ["hpa", {"preset": "hpa"}, {"policy": "hpa"}])
def test_hpa_preset_shortcut(value: object) -> None:
    policy = ScalingPolicy.model_validate(value)
    (check,) = policy.checks
    assert isinstance(check, TargetCheck)
    assert (check.metric, check.target, check.tolerance) == ("cpu", 0.7, 0.1)
    assert policy.behavior.down.stabilization == 300.0
    assert policy.interval == 15.0


def test_preset_fields_are_overridable() -> None:
    policy = ScalingPolicy.model_validate({"preset": "hpa", "min": 3, "max": 40, "dry_run": True})
    assert (policy.min, policy.max, policy.dry_run) == (3, 40, True)


def test_roadmap_rps_rule_follows_capacity() -> None:
    without = ScalingPolicy.model_validate("roadmap")
    with_cap = ScalingPolicy.model_validate({"preset": "roadmap", "capacity": 50})
    assert "rps" not in {c.metric for c in without.checks}
    rps = [c for c in with_cap.checks if c.metric == "rps"]
    assert len(rps) == 1 and isinstance(rps[0], ThresholdCheck)
    assert rps[0].per_replica and rps[0].above == pytest.approx(40.0)
    labels = [c.label for c in with_cap.compiled.checks]
    assert "cpu above 70% for 5m" in labels and "cpu below 30% for 15m" in labels


def test_min_above_max_names_the_fix() -> None:
    with pytest.raises(ValidationError, match=r"min \(5\) is greater than max \(3\): lower min"):
        ScalingPolicy.model_validate({"min": 5, "max": 3})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"preset": "fast"}, "unknown preset 'fast'"),
        ({"preset": "hpa", "policy": "hpa"}, "either 'policy' or 'preset'"),
        ({"checks": [{"kind": "threshold", "metric": "cpu"}]}, "exactly one of 'above'"),
        ({"checks": [{"kind": "threshold", "metric": "cpu", "above": "7x"}]}, "percentage"),
        (
            {"checks": [{"kind": "threshold", "metric": "cpu", "above": "70%", "change": "x"}]},
            "write a change like",
        ),
        ({"checks": [{"kind": "target", "metric": "gpu", "target": 1}]}, "metric"),
        ({"checks": [{"kind": "target", "metric": "cpu", "target": 0}]}, "greater than zero"),
        (
            {
                "checks": [
                    {
                        "kind": "step",
                        "metric": "rps",
                        "bands": [
                            {"above": 1, "below": 5, "change": "+1"},
                            {"above": 4, "change": "+2"},
                        ],
                    }
                ]
            },
            "overlap",
        ),
        ({"unknown": 1}, "Extra inputs are not permitted"),
        ({"behavior": {"up": {"limits": [{"type": "replicas", "value": 1.5}]}}}, "whole number"),
    ],
)
def test_invalid_policies_say_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScalingPolicy.model_validate(data)


def test_json_schema_is_clean() -> None:
    schema = ScalingPolicy.model_json_schema(by_alias=True)
    text = json.dumps(schema)
    assert "discriminator" in text
    threshold = schema["$defs"]["ThresholdCheck"]["properties"]
    assert "for" in threshold and "for_" not in threshold
    assert schema["properties"]["interval"]["description"]


def test_policy_is_frozen() -> None:
    policy = ScalingPolicy()
    with pytest.raises(ValidationError):
        policy.min = 3  # type: ignore[misc]
