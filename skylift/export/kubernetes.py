"""A service's skylift policy as a Kubernetes HPA (``autoscaling/v2``) and a KEDA ScaledObject.

Pure: the validated config in, two manifests (plain dicts, ready for YAML) and
the list of what they cannot express out. Nothing here reads a file, a clock or
the network; ``skylift.export.validate`` checks the manifests against the
official schemas and the CLI prints them.

Both targets only do target tracking (desired = ceil(current x value / target)),
so skylift's ``target`` checks translate and its ``threshold`` and ``step``
rules do not. The mapping table and the reasons are in docs/kubernetes-export.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from skylift.config.root import SkyliftConfig
from skylift.config.service import Service
from skylift.engine.metrics import FRACTIONS, TOTALS, format_value
from skylift.engine.policy import (
    DirectionBehavior,
    ScalingPolicy,
    StepCheck,
    TargetCheck,
    ThresholdCheck,
)
from skylift.engine.schedule import Schedule

HPA_API_VERSION = "autoscaling/v2"
KEDA_API_VERSION = "keda.sh/v1alpha1"
EXTERNAL_METRIC_PREFIX = "skylift_"
"""HPA External metric names: ``skylift_<metric>`` with the label ``service=<name>``, served
by a metrics adapter (e.g. prometheus-adapter) from the same queries the ScaledObject uses."""
EXTERNAL_METRIC_NAMES = {
    "rps": "skylift_rps",
    "connections": "skylift_connections",
    "queue": "skylift_queue",
    "p95_latency": "skylift_p95_latency_seconds",
}
DEFAULT_PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"
"""The ScaledObject's Prometheus when neither --prometheus-url nor metrics.prometheus_url is set."""
HPA_TOLERANCE = 0.1
"""Kubernetes' controller-wide --horizontal-pod-autoscaler-tolerance default."""
HPA_SYNC_PERIOD = 15.0
"""Kubernetes' controller-wide --horizontal-pod-autoscaler-sync-period default (seconds)."""
#: skylift's ``behavior.<direction>.select`` -> HPA's ``selectPolicy``
SELECT_POLICY = {"max": "Max", "min": "Min", "disabled": "Disabled"}
MAX_STABILIZATION = 3600
"""The apiserver refuses a stabilizationWindowSeconds above one hour."""
MAX_PERIOD = 1800
"""The apiserver refuses a policy periodSeconds above 30 minutes."""
UNLIMITED_PERIOD = 15
"""Period of the Pods policy that stands for skylift's "no rate limit" (empty ``limits``)."""

Where = Literal["HPA", "KEDA", "HPA and KEDA"]


@dataclass(frozen=True)
class Gap:
    """One part of the policy a target cannot express, or expresses only approximately."""

    where: Where
    what: str
    approximated: bool = False

    def line(self) -> str:
        """The one stderr line that says it."""
        verb = "approximated" if self.approximated else "cannot express"
        return f"{verb} ({self.where}): {self.what}"


@dataclass(frozen=True)
class ExportOptions:
    """Where the manifests point: the Deployment, its namespace, the Prometheus KEDA asks."""

    deployment: str | None = None
    namespace: str | None = None
    prometheus_url: str | None = None


@dataclass(frozen=True)
class KubernetesExport:
    """The two manifests and what they leave out."""

    hpa: dict[str, Any]
    scaled_object: dict[str, Any]
    gaps: tuple[Gap, ...]


class NothingToExport(ValueError):
    """The service has no policy the two targets could scale on at all."""


def default_query(metric: str, service: str) -> str:
    """The PromQL a ScaledObject asks for a skylift metric when the service gives none.

    rps, connections and queue come from HAProxy's own exporter (the backend skylift
    renders is ``be_<service>``, see skylift.lb.render.backend_name); p95 latency has no
    HAProxy series, so it follows the common ``http_request_duration_seconds`` histogram
    of the application, labelled ``service``.
    """
    proxy = f'proxy="be_{service}"'
    if metric == "rps":
        return f"sum(rate(haproxy_backend_http_requests_total{{{proxy}}}[1m]))"
    if metric == "connections":
        return f"sum(haproxy_backend_current_sessions{{{proxy}}})"
    if metric == "queue":
        return (
            f"sum(haproxy_backend_current_queue{{{proxy}}}) + "
            f"sum(haproxy_server_current_queue{{{proxy}}})"
        )
    if metric == "p95_latency":
        return (
            "histogram_quantile(0.95, sum by (le) (rate("
            f'http_request_duration_seconds_bucket{{service="{service}"}}[1m])))'
        )
    raise ValueError(f"no Prometheus query for metric {metric!r}")


def quantity(value: float) -> str:
    """A Kubernetes quantity string: whole numbers as is, else in milli-units ("250m")."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def slug(text: str) -> str:
    """A trigger name KEDA takes (and a formula can refer to): lowercase letters, digits, '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "trigger"


def _unique_names(triggers: list[dict[str, Any]]) -> None:
    """KEDA refuses two triggers of one name: number the repeats (``target-cpu-2``)."""
    seen: dict[str, int] = {}
    for trigger in triggers:
        name = str(trigger["name"])
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            trigger["name"] = f"{name}-{seen[name]}"


def _number(value: float) -> str:
    """A KEDA metadata number (KEDA reads strings): no trailing '.0'."""
    return str(int(value)) if float(value).is_integer() else repr(round(value, 6))


class _Translation:
    """One export in progress: collects manifest parts and gaps."""

    def __init__(self, name: str, service: Service, policy: ScalingPolicy) -> None:
        self.name = name
        self.service = service
        self.policy = policy
        self.gaps: list[Gap] = []

    def gap(self, where: Where, what: str, *, approximated: bool = False) -> None:
        self.gaps.append(Gap(where, what, approximated))

    # -- behavior ----------------------------------------------------------

    def _seconds(self, value: float, limit: int, what: str, low: int = 0) -> int:
        whole = max(low, math.ceil(value))
        if whole > limit:
            self.gap(
                "HPA and KEDA", f"{what} {value:g}s is above Kubernetes' {limit}s: set to {limit}s"
            )
            return limit
        if whole != value:
            self.gap(
                "HPA and KEDA",
                f"{what} {value:g}s: Kubernetes counts whole seconds, {whole}s written",
                approximated=True,
            )
        return whole

    def rules(self, direction: Literal["up", "down"], rules: DirectionBehavior) -> dict[str, Any]:
        """One direction of HPA ``behavior`` (KEDA passes the same block to its HPA)."""
        label = f"behavior.{direction}"
        out: dict[str, Any] = {
            "stabilizationWindowSeconds": self._seconds(
                rules.stabilization, MAX_STABILIZATION, f"{label}.stabilization"
            ),
            "selectPolicy": SELECT_POLICY[rules.select],
        }
        policies: list[dict[str, Any]] = []
        for i, limit in enumerate(rules.limits):
            period = self._seconds(limit.period, MAX_PERIOD, f"{label}.limits[{i}].period", 1)
            if limit.type == "replicas":
                policies.append(
                    {"type": "Pods", "value": int(limit.value), "periodSeconds": period}
                )
                continue
            percent = limit.value * 100.0
            whole = max(1, round(percent))
            if whole != percent:
                self.gap(
                    "HPA and KEDA",
                    f"{label}.limits[{i}] {percent:g}%: Kubernetes takes whole percents, "
                    f"{whole}% written",
                    approximated=True,
                )
            policies.append({"type": "Percent", "value": whole, "periodSeconds": period})
        if not policies:
            # No policies in Kubernetes means its defaults, not "no limit": a Pods policy
            # of `max` replicas per period allows any move inside [min, max] at once.
            policies.append(
                {"type": "Pods", "value": self.policy.max, "periodSeconds": UNLIMITED_PERIOD}
            )
        out["policies"] = policies
        if rules.cooldown > 0:
            self.gap(
                "HPA and KEDA",
                f"{label}.cooldown {rules.cooldown:g}s: HPA has no cooldown after a scaling "
                "action (KEDA's cooldownPeriod is only for scaling to zero); use the "
                "stabilization window instead",
            )
        return out

    def behavior(self) -> dict[str, Any]:
        b = self.policy.behavior
        return {"scaleUp": self.rules("up", b.up), "scaleDown": self.rules("down", b.down)}

    # -- checks ------------------------------------------------------------

    def check_label(self, index: int, check: TargetCheck | ThresholdCheck | StepCheck) -> str:
        return f"checks[{index}] ({check.name or f'{check.kind}:{check.metric}'})"

    def query(self, metric: str) -> str:
        own = self.service.prometheus.get(metric)  # type: ignore[call-overload]
        if own is not None:
            return str(own)
        if metric == "p95_latency":
            self.gap(
                "KEDA",
                "p95_latency is measured by skylift from HAProxy's log, which Prometheus does "
                "not see: the trigger queries the app's http_request_duration_seconds "
                f"histogram (label service={self.name}); set services.{self.name}."
                "prometheus.p95_latency to your own query",
                approximated=True,
            )
        return default_query(metric, self.name)

    def hpa_metric(self, label: str, check: TargetCheck) -> dict[str, Any]:
        metric, target = check.metric, check.target
        if metric in FRACTIONS:
            percent = target * 100.0
            whole = max(1, round(percent))
            if whole != percent:
                self.gap(
                    "HPA and KEDA",
                    f"{label} target {format_value(metric, target)}: Kubernetes takes whole "
                    f"percents, {whole}% written",
                    approximated=True,
                )
            return {
                "type": "Resource",
                "resource": {
                    "name": metric,
                    "target": {"type": "Utilization", "averageUtilization": whole},
                },
            }
        selector = {"matchLabels": {"service": self.name}}
        ident = {"name": EXTERNAL_METRIC_NAMES[metric], "selector": selector}
        if metric in TOTALS:
            # a service total over a per-replica target: External AverageValue divides the
            # total by the pod count, exactly skylift's ceil(total / target)
            target_spec = {"type": "AverageValue", "averageValue": quantity(target)}
        else:
            # a service-wide average: Value gives ceil(current x value / target), as skylift
            target_spec = {"type": "Value", "value": quantity(target)}
        return {"type": "External", "external": {"metric": ident, "target": target_spec}}

    def keda_trigger(self, check: TargetCheck, prometheus_url: str) -> dict[str, Any]:
        metric, target = check.metric, check.target
        name = slug(check.name or f"{check.kind}-{metric}")
        if metric in FRACTIONS:
            return {
                "type": metric,
                "name": name,
                "metricType": "Utilization",
                "metadata": {"value": str(max(1, round(target * 100.0)))},
            }
        return {
            "type": "prometheus",
            "name": name,
            "metricType": "AverageValue" if metric in TOTALS else "Value",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": self.query(metric),
                "threshold": _number(target),
            },
        }

    def unexpressed_check(self, label: str, check: ThresholdCheck | StepCheck) -> None:
        if isinstance(check, ThresholdCheck):
            side = "above" if check.above is not None else "below"
            bound = check.above if check.above is not None else check.below
            assert bound is not None  # the model requires exactly one
            self.gap(
                "HPA and KEDA",
                f"{label} threshold {check.metric} {side} {format_value(check.metric, bound)} "
                f"for {check.for_:g}s -> {check.effective_change}: Kubernetes only tracks "
                "targets (desired = current x value / target), never steps by a fixed change",
            )
        else:
            self.gap(
                "HPA and KEDA",
                f"{label} step bands on {check.metric}: Kubernetes only tracks targets, "
                "it has no step scaling",
            )

    # -- calendar ------------------------------------------------------------

    def cron_trigger(self, index: int, schedule: Schedule) -> dict[str, Any] | None:
        """A KEDA cron trigger for a schedule whose window ends the same day, else None."""
        label = f"schedules[{index}] ({schedule.name or schedule.cron})"
        if schedule.max is not None:
            self.gap(
                "KEDA",
                f"{label} max {schedule.max}: a cron trigger only raises the count "
                "(desiredReplicas), it cannot lower maxReplicaCount for a window",
            )
        if schedule.min is None:
            return None
        minute, hour, dom, month, dow = schedule.cron.split()
        start = int(hour) * 60 + int(minute) if minute.isdigit() and hour.isdigit() else None
        minutes = schedule.duration / 60.0
        if start is None or not minutes.is_integer() or start + minutes >= 24 * 60:
            self.gap(
                "KEDA",
                f"{label}: a cron trigger needs an end cron, which exists only for one start "
                "time a day, a window of whole minutes, and an end on the same day",
            )
            return None
        end = start + int(minutes)
        return {
            "type": "cron",
            "name": slug(schedule.name or f"schedule-{index}"),
            "metadata": {
                "timezone": schedule.timezone,
                "start": schedule.cron,
                "end": f"{end % 60} {end // 60} {dom} {month} {dow}",
                "desiredReplicas": str(schedule.min),
            },
        }


def export_kubernetes(
    config: SkyliftConfig, service: str, options: ExportOptions | None = None
) -> KubernetesExport:
    """The HPA and the ScaledObject for ``service``, and what neither can express.

    Raises ``KeyError`` for an unknown service and ``NothingToExport`` when the service
    has no autoscale block or no target check (Kubernetes would then scale on its own
    default of 80 % CPU, which is not the policy).
    """
    options = options or ExportOptions()
    spec = config.services[service]
    policy = spec.autoscale
    if policy is None:
        raise NothingToExport(
            f"service {service!r} has no autoscale block: there is no policy to export"
        )
    t = _Translation(service, spec, policy)
    deployment = options.deployment or service
    prometheus_url = (
        options.prometheus_url or config.metrics.prometheus_url or DEFAULT_PROMETHEUS_URL
    )

    metrics: list[dict[str, Any]] = []
    triggers: list[dict[str, Any]] = []
    for i, check in enumerate(policy.checks):
        label = t.check_label(i, check)
        if not isinstance(check, TargetCheck):
            t.unexpressed_check(label, check)
            continue
        metrics.append(t.hpa_metric(label, check))
        triggers.append(t.keda_trigger(check, prometheus_url))
        if abs(check.tolerance - HPA_TOLERANCE) > 1e-9:
            t.gap(
                "HPA and KEDA",
                f"{label} tolerance {check.tolerance * 100:g}%: Kubernetes applies one "
                "controller-wide tolerance (--horizontal-pod-autoscaler-tolerance, 10% by "
                "default); the per-HPA field is alpha (HPAConfigurableTolerance) and not written",
            )
    if not metrics:
        raise NothingToExport(
            f"service {service!r} has no target check: HPA and KEDA only track targets, and "
            "an HPA without metrics scales on 80% CPU; add e.g. "
            "`{kind: target, metric: cpu, target: 70%}`"
        )
    # `semantics: hpa` without a behavior block counts as an HPA without one: leave it out
    no_block = policy.semantics == "hpa" and not policy.hpa_behavior_block
    behavior = None if no_block else t.behavior()

    for i, schedule in enumerate(policy.schedules):
        trigger = t.cron_trigger(i, schedule)
        if trigger is not None:
            triggers.append(trigger)
    _unique_names(triggers)
    if policy.schedules:
        t.gap("HPA", f"schedules ({len(policy.schedules)}): an HPA has no time windows")
    _calendar_and_forecast_gaps(t, policy)
    _service_gaps(t, config, spec)

    labels = {"app.kubernetes.io/name": service, "app.kubernetes.io/managed-by": "skylift"}
    target_ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    metadata: dict[str, Any] = {"name": deployment, "labels": labels}
    if options.namespace:
        metadata["namespace"] = options.namespace
    hpa = {
        "apiVersion": HPA_API_VERSION,
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": target_ref,
            "minReplicas": policy.min,
            "maxReplicas": policy.max,
            "metrics": metrics,
            **({"behavior": behavior} if behavior is not None else {}),
        },
    }
    so_metadata = dict(metadata)
    if policy.paused:
        so_metadata["annotations"] = {"autoscaling.keda.sh/paused": "true"}
    so_spec: dict[str, Any] = {
        "scaleTargetRef": {"name": deployment},
        "pollingInterval": max(1, math.ceil(policy.interval)),
        "minReplicaCount": policy.min,
        "maxReplicaCount": policy.max,
        **(
            {"advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}}}
            if behavior
            else {}
        ),
        "triggers": triggers,
    }
    if policy.fallback is not None:
        # KEDA's admission webhook refuses a fallback beside cpu/memory triggers or any
        # metricType but AverageValue: write it only where KEDA accepts it
        refused = [
            str(tr["name"])
            for tr in triggers
            if tr["type"] in FRACTIONS or tr.get("metricType", "AverageValue") != "AverageValue"
        ]
        if refused:
            t.gap(
                "KEDA",
                f"fallback: KEDA accepts one only when every trigger is an AverageValue "
                f"metric, and {', '.join(refused)} is not; not written",
            )
        else:
            so_spec["fallback"] = {
                "failureThreshold": policy.fallback.after_failures,
                "replicas": policy.fallback.replicas,
            }
    scaled_object = {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": so_metadata,
        "spec": so_spec,
    }
    return KubernetesExport(hpa, scaled_object, tuple(t.gaps))


def _calendar_and_forecast_gaps(t: _Translation, policy: ScalingPolicy) -> None:
    if abs(policy.interval - HPA_SYNC_PERIOD) > 1e-9:
        t.gap(
            "HPA",
            f"interval {policy.interval:g}s: the HPA sync period is controller-wide "
            f"(--horizontal-pod-autoscaler-sync-period, {HPA_SYNC_PERIOD:g}s by default); "
            "the ScaledObject's pollingInterval carries it",
        )
    if policy.paused:
        t.gap("HPA", "paused: an HPA cannot be paused (delete it, or scale the target to 0)")
    if policy.dry_run:
        t.gap("HPA and KEDA", "dry_run: both act on what they decide; there is no advisory mode")
    if policy.fallback is not None:
        t.gap(
            "HPA",
            f"fallback ({policy.fallback.replicas} replicas after "
            f"{policy.fallback.after_failures} failed decisions): an HPA keeps the count when "
            "a metric is missing (KEDA's fallback carries it, for AverageValue triggers only)",
        )
    for event in policy.events:
        parts = []
        if event.min is not None:
            parts.append(f"floor {event.min}")
        if event.multiplier is not None:
            parts.append(f"load x{event.multiplier:g}")
        t.gap(
            "HPA and KEDA",
            f"event {event.name!r} ({', '.join(parts)}): a one-off span has no cron form "
            "(a cron trigger recurs), and neither can multiply a measured load",
        )
    forecast = policy.forecast
    if forecast is not None and forecast.enabled:
        t.gap(
            "HPA and KEDA",
            "forecast (predictive floor): both scale on the current value only; neither "
            "forecasts load (the HPA predictive proposal is not part of Kubernetes)",
        )


def _service_gaps(t: _Translation, config: SkyliftConfig, spec: Service) -> None:
    if spec.database is not None:
        db = spec.database
        t.gap(
            "HPA and KEDA",
            f"connection budget (max_connections {db.max_connections}, pool_size "
            f"{db.pool_size}, reserve {db.reserve}): neither knows the database, so nothing "
            "re-checks max replicas x pool_size against it; the max written fits today",
        )
    zones = sorted({r.zone for r in config.edged_regions.values() if r.zone})
    if zones:
        t.gap(
            "HPA and KEDA",
            f"residency (zones {', '.join(zones)}): an autoscaler scales one Deployment in one "
            "cluster; keeping users' data in their zone is the edge's routing, not a count",
        )
