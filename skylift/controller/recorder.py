"""One place where the controller reports what happened: log, store and metrics.

Every action and health transition becomes one structlog event, one row in
the store's event table and, where it counts, a Prometheus sample.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

log = structlog.get_logger("skylift.controller")


class EventStore(Protocol):
    """The part of the store the recorder needs."""

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        data: dict[str, Any] | None = None,
    ) -> Any: ...


class ControllerMetrics:
    """skylift's own metrics, in their own registry (not the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.replicas_desired = Gauge(
            "skylift_replicas_desired",
            "Replicas the controller wants",
            ["service"],
            registry=self.registry,
        )
        self.replicas_ready = Gauge(
            "skylift_replicas_ready",
            "Replicas healthy in HAProxy",
            ["service"],
            registry=self.registry,
        )
        self.replicas_starting = Gauge(
            "skylift_replicas_starting",
            "Replicas started, not yet healthy",
            ["service"],
            registry=self.registry,
        )
        self.crash_loop = Gauge(
            "skylift_service_crash_loop",
            "1 while the service is in crash-loop back-off",
            ["service"],
            registry=self.registry,
        )
        self.events = Counter(
            "skylift_events_total",
            "Events recorded, by kind",
            ["service", "kind"],
            registry=self.registry,
        )
        self.replica_starts = Counter(
            "skylift_replica_starts_total",
            "Replicas started",
            ["service"],
            registry=self.registry,
        )
        self.replica_failures = Counter(
            "skylift_replica_failures_total",
            "Replicas that exited, failed health checks or failed to start",
            ["service", "reason"],
            registry=self.registry,
        )
        self.last_tick = Gauge(
            "skylift_control_loop_last_tick_timestamp_seconds",
            "Unix time of the last completed reconcile tick",
            ["service"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "skylift_scaling_decisions_total",
            "Autoscaling decisions, by direction and what drove them",
            ["service", "direction", "reason"],
            registry=self.registry,
        )
        self.recommended = Gauge(
            "skylift_replicas_recommended",
            "What the autoscaling checks asked for before clamps",
            ["service"],
            registry=self.registry,
        )
        self.tick_errors = Counter(
            "skylift_control_loop_errors_total",
            "Reconcile ticks that raised",
            ["service"],
            registry=self.registry,
        )
        self.forecast = Gauge(
            "skylift_forecast",
            "The forecast of the load over the start-up horizon (kind: point, upper), in "
            "the forecast metric's unit",
            ["service", "metric", "kind"],
            registry=self.registry,
        )
        self.forecast_replicas = Gauge(
            "skylift_forecast_replicas",
            "Replicas the forecast asks for (a floor under the reactive checks)",
            ["service"],
            registry=self.registry,
        )
        self.forecast_history = Gauge(
            "skylift_forecast_history_seconds",
            "History the forecaster has learned from",
            ["service"],
            registry=self.registry,
        )
        self.forecast_error = Gauge(
            "skylift_forecast_error_ratio",
            "Forecast error of the max load over the horizon (kind: mape, under = point "
            "forecast below the realized max, upper_under = even the headroom was short)",
            ["service", "kind"],
            registry=self.registry,
        )

    def set_forecast(self, service: str, view: dict[str, Any]) -> None:
        """Export an ``Autoscaler.forecast_view()``; errors only once some were scored."""
        metric = str(view["metric"])
        for kind in ("point", "upper"):
            if view[kind] is not None:
                self.forecast.labels(service, metric, kind).set(view[kind])
        if view["replicas"] is not None:
            self.forecast_replicas.labels(service).set(view["replicas"])
        self.forecast_history.labels(service).set(view["history_s"])
        stats = view["stats"]
        for kind in ("mape", "under", "upper_under"):
            if stats.get(f"{kind}_pct") is not None:
                self.forecast_error.labels(service, kind).set(stats[f"{kind}_pct"] / 100.0)


class Recorder:
    """Logs, stores and counts one event."""

    def __init__(self, store: EventStore, metrics: ControllerMetrics) -> None:
        self._store = store
        self.metrics = metrics

    def event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        **data: Any,
    ) -> None:
        getattr(log, level if level in ("debug", "info", "warning", "error") else "info")(
            kind, service=service, message=message, **data
        )
        self.metrics.events.labels(service=service or "", kind=kind).inc()
        try:
            self._store.add_event(kind, message, service=service, level=level, data=data or None)
        except Exception as exc:  # a store outage must not stop the data plane
            log.error("event_not_stored", kind=kind, error=str(exc))
