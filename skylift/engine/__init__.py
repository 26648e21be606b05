"""skylift's pure scaling engine: policy in, Decision with its reasons out.

No I/O, no clock, no logging (an import-linter contract enforces it). The
controller and the simulator call the same ``decide``.
"""

from skylift.engine.changes import Change
from skylift.engine.compiled import CompiledPolicy, compile_policy
from skylift.engine.decide import decide
from skylift.engine.metrics import METRICS, TOTALS, Metric
from skylift.engine.model import CheckResult, Clamp, Decision, Observations, Series, State
from skylift.engine.policy import (
    Band,
    Behavior,
    DirectionBehavior,
    Fallback,
    RateLimit,
    ScalingPolicy,
    StepCheck,
    TargetCheck,
    ThresholdCheck,
)

__all__ = [
    "METRICS",
    "TOTALS",
    "Band",
    "Behavior",
    "Change",
    "CheckResult",
    "Clamp",
    "CompiledPolicy",
    "Decision",
    "DirectionBehavior",
    "Fallback",
    "Metric",
    "Observations",
    "RateLimit",
    "ScalingPolicy",
    "Series",
    "State",
    "StepCheck",
    "TargetCheck",
    "ThresholdCheck",
    "compile_policy",
    "decide",
]
