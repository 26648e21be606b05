"""The scaling policy as operators write it: pydantic models with clear errors.

These models are validated once, then compiled (``ScalingPolicy.compiled``) into
plain slots dataclasses, so the decision hot path never touches pydantic.
"""

from __future__ import annotations

import itertools
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_serializer,
    model_serializer,
    model_validator,
)

from skylift.engine.changes import Change, parse_change
from skylift.engine.metrics import Metric, parse_metric_value, render_metric_value
from skylift.engine.predictive import ForecastSettings
from skylift.engine.presets import PRESETS, preset_fields
from skylift.engine.schedule import Event, Schedule
from skylift.units import Duration, Percent, parse_percent

if TYPE_CHECKING:
    from skylift.engine.compiled import CompiledPolicy

ChangeField = Annotated[
    Change,
    PlainValidator(parse_change),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^[+-]\d+(\.\d+)?%?$"}, {"type": "integer"}],
            "description": "relative change: '+1', '-2' replicas or '+50%', '-10%' of the count",
        }
    ),
]

MetricValue = Annotated[
    float,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "number"}],
            "description": "in the metric's unit: cpu/memory '70%', p95_latency '500ms', "
            "rps/connections/queue a number",
        }
    ),
]


def _parse_metric_fields(data: Any, names: tuple[str, ...]) -> Any:
    """Parse value fields by the metric's unit (so ``70%`` and ``500ms`` both work)."""
    if not isinstance(data, dict) or "metric" not in data:
        return data
    metric = data["metric"]
    parsed = dict(data)
    for name in names:
        if parsed.get(name) is not None:
            parsed[name] = parse_metric_value(metric, parsed[name])
    return parsed


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _CheckBase(_Model):
    name: str | None = Field(None, description="label used in reasons; default kind:metric")
    metric: Metric
    per_replica: bool = Field(
        False, description="divide a service total (rps, connections, queue) by ready replicas"
    )
    group: str | None = Field(
        None,
        description="checks sharing a group speak as one: any rule that fires decides for the "
        "group (pair a high and a low rule on one metric so the pair can scale down)",
    )


class ThresholdCheck(_CheckBase):
    """Fire ``change`` when the metric stayed above/below a value for a duration."""

    kind: Literal["threshold"] = "threshold"
    above: MetricValue | None = None
    below: MetricValue | None = None
    for_: Duration = Field(0.0, alias="for", description="how long the condition must hold")
    change: ChangeField | None = Field(None, description="default +1 for above, -1 for below")

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        return _parse_metric_fields(data, ("above", "below"))

    @field_serializer("above", "below")
    def _render(self, value: float | None) -> float | str | None:
        return render_metric_value(self.metric, value)

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdCheck:
        if (self.above is None) == (self.below is None):
            raise ValueError(
                "a threshold check needs exactly one of 'above' or 'below'; "
                "write two checks in one group for a high/low pair"
            )
        if self.change is not None and self.change.amount == 0:
            raise ValueError("change must not be zero: use '+1', '-1', '+50%' ...")
        return self

    @property
    def effective_change(self) -> Change:
        if self.change is not None:
            return self.change
        return Change(1.0 if self.above is not None else -1.0, False)


class TargetCheck(_CheckBase):
    """Kubernetes HPA target tracking: keep the metric near ``target``.

    For per-replica averages (cpu, memory, p95_latency) desired =
    ceil(ready * value / target); for service totals (rps, connections, queue)
    ``target`` is per replica and desired = ceil(total / target).
    """

    kind: Literal["target"] = "target"
    target: MetricValue = Field(description="per-replica target value")
    tolerance: Percent = Field(0.1, description="no change while |value/target - 1| <= this")

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        return _parse_metric_fields(data, ("target",))

    @field_serializer("target")
    def _render(self, value: float) -> float | str | None:
        return render_metric_value(self.metric, value)

    @model_validator(mode="after")
    def _positive(self) -> TargetCheck:
        if self.target <= 0:
            raise ValueError("target must be greater than zero")
        if self.per_replica:
            raise ValueError(
                "per_replica has no meaning for a target check: the target of a total "
                "metric is already per replica"
            )
        return self


class Band(_Model):
    """One band of a step check: applies when above <= value < below."""

    above: MetricValue | None = None
    below: MetricValue | None = None
    change: ChangeField


class StepCheck(_CheckBase):
    """Step scaling: pick the change of the band the metric falls in."""

    kind: Literal["step"] = "step"
    bands: tuple[Band, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "metric" not in data or "bands" not in data:
            return data
        bands = data["bands"]
        if not isinstance(bands, list | tuple):
            return data
        metric = data["metric"]
        parsed_bands = []
        for band in bands:
            if isinstance(band, dict):
                band = {
                    key: parse_metric_value(metric, value)
                    if key in ("above", "below") and value is not None
                    else value
                    for key, value in band.items()
                }
            parsed_bands.append(band)
        parsed = {**data, "bands": parsed_bands}
        return parsed

    @field_serializer("bands")
    def _render(self, bands: tuple[Band, ...]) -> list[dict[str, Any]]:
        return [
            {
                "above": render_metric_value(self.metric, b.above),
                "below": render_metric_value(self.metric, b.below),
                "change": str(b.change),
            }
            for b in bands
        ]

    @model_validator(mode="after")
    def _disjoint(self) -> StepCheck:
        spans = sorted(
            (
                b.above if b.above is not None else float("-inf"),
                b.below if b.below is not None else float("inf"),
            )
            for b in self.bands
        )
        for low, high in spans:
            if low >= high:
                raise ValueError(
                    f"band above {low:g} below {high:g} is empty: above must be < below"
                )
        for (_, high1), (low2, _) in itertools.pairwise(spans):
            if low2 < high1:
                raise ValueError("step bands overlap: each value must fall in at most one band")
        return self


Check = Annotated[ThresholdCheck | TargetCheck | StepCheck, Field(discriminator="kind")]


class RateLimit(_Model):
    """At most ``value`` replicas (or percent of the count) of change per ``period``."""

    type: Literal["replicas", "percent"]
    value: float = Field(description="replicas (integer) or a percentage like '100%'")
    period: Duration = 15.0

    @model_validator(mode="before")
    @classmethod
    def _unit(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "percent" and "value" in data:
            return {**data, "value": parse_percent(data["value"])}
        return data

    @model_validator(mode="after")
    def _valid(self) -> RateLimit:
        if self.value <= 0:
            raise ValueError("a rate limit value must be greater than zero")
        if self.type == "replicas" and not float(self.value).is_integer():
            raise ValueError("a 'replicas' rate limit is a whole number of replicas")
        if self.period <= 0:
            raise ValueError("a rate limit period must be greater than zero")
        return self


class DirectionBehavior(_Model):
    """How fast one direction may move (the Kubernetes HPA ``behavior`` block)."""

    stabilization: Duration = Field(
        0.0, description="up: use the lowest, down: the highest recommendation of this window"
    )
    limits: tuple[RateLimit, ...] = Field((), description="empty means no rate limit")
    select: Literal["max", "min", "disabled"] = Field(
        "max",
        description="which limit wins: max = the one allowing the biggest change; "
        "disabled = never move in this direction (HPA selectPolicy: Disabled)",
    )
    cooldown: Duration = Field(
        0.0, description="no move in this direction within this long after any scaling action"
    )


def _default_up() -> DirectionBehavior:
    return DirectionBehavior(
        limits=(
            RateLimit(type="percent", value=1.0, period=15.0),
            RateLimit(type="replicas", value=4, period=15.0),
        )
    )


def _default_down() -> DirectionBehavior:
    return DirectionBehavior(
        stabilization=300.0, limits=(RateLimit(type="percent", value=1.0, period=15.0),)
    )


class Behavior(_Model):
    """Per-direction pacing; the defaults are Kubernetes' HPA defaults."""

    up: DirectionBehavior = Field(default_factory=_default_up)
    down: DirectionBehavior = Field(default_factory=_default_down)


class Fallback(_Model):
    """KEDA-style fallback: after N decisions with missing metrics, keep at least ``replicas``."""

    after_failures: int = Field(3, ge=1)
    replicas: int = Field(ge=1)


class ScalingPolicy(_Model):
    """A service's ``autoscale:`` block.

    ``autoscale: hpa`` is a complete policy; ``{policy: hpa, max: 20}`` (or
    ``preset:``) starts from a built-in policy and overrides fields.
    """

    preset: Literal["roadmap", "hpa", "predictive"] | None = Field(
        None, description="start from a built-in policy; fields given here override it"
    )
    semantics: Literal["skylift", "hpa"] = Field(
        "skylift",
        description="hpa: count exactly as a Kubernetes HPA does (rounding, out-of-range "
        "counts, no behavior block); skylift: the engine's own choices (docs/engine.md)",
    )
    min: int = Field(1, ge=1, description="fewest replicas")
    max: int = Field(10, ge=1, description="most replicas")
    interval: Duration = Field(15.0, description="time between decisions")
    capacity: float | None = Field(
        None, gt=0, description="requests/s one replica serves within its SLO (roadmap rps rule)"
    )
    checks: tuple[Check, ...] = ()
    behavior: Behavior = Field(default_factory=Behavior)
    fallback: Fallback | None = None
    paused: bool = Field(False, description="hold the current count, decide nothing")
    dry_run: bool = Field(False, description="decide and explain, but keep the current count")
    schedules: tuple[Schedule, ...] = Field(
        (), description="cron windows in a time zone that raise min or replace max"
    )
    events: tuple[Event, ...] = Field(
        (), description="one-off spans with a floor (min) or a load multiplier"
    )
    forecast: ForecastSettings | None = Field(
        None, description="predictive scaling: a forecast floor under the reactive checks"
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"preset": data}
        if isinstance(data, dict) and "policy" in data:
            # `policy: roadmap` reads naturally in a service block; it means `preset`.
            if "preset" in data:
                raise ValueError("give either 'policy' or 'preset', not both")
            data = {("preset" if k == "policy" else k): v for k, v in data.items()}
        if isinstance(data, dict) and data.get("preset") is not None:
            name = data["preset"]
            if name not in PRESETS:
                raise ValueError(
                    f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))}"
                )
            return {**preset_fields(name, data.get("capacity")), **data}
        return data

    @model_serializer(mode="wrap")
    def _omit_unset_behavior(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Under HPA semantics a missing ``behavior`` means "no behavior block", which
        differs from HPA's behavior defaults: keep it missing so a dump reloads the same."""
        data = handler(self)
        if isinstance(data, dict) and not self.hpa_behavior_block and self.semantics == "hpa":
            data.pop("behavior", None)
        return data

    @property
    def hpa_behavior_block(self) -> bool:
        """Whether the policy has a ``behavior`` block (HPA counts differently without)."""
        return "behavior" in self.model_fields_set

    @model_validator(mode="after")
    def _bounds(self) -> ScalingPolicy:
        if self.min > self.max:
            raise ValueError(
                f"min ({self.min}) is greater than max ({self.max}): lower min or raise max"
            )
        if self.interval <= 0:
            raise ValueError("interval must be greater than zero, e.g. '15s'")
        f = self.forecast
        if f is not None and f.enabled and f.target is None and self.capacity is None:
            raise ValueError("forecast needs a per-replica target: set forecast.target or capacity")
        return self

    @cached_property
    def compiled(self) -> CompiledPolicy:
        """The hot-path form, built once per policy object."""
        from skylift.engine.compiled import compile_policy

        return compile_policy(self)
