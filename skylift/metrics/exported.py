"""The health of every (source, service) pair on skylift's own ``/metrics``.

Read at scrape time from the collector (a prometheus_client custom
collector), so nothing has to remember to update a gauge:

- ``skylift_metric_source_up{source,service}``: 1 while the pair answers,
  0 while it is failing (its metrics MISSING for that service);
- ``skylift_metric_source_errors_total{source,service}``: failed polls.

One metric with a label rather than ``_success``/``_failed`` pairs, and the
labels are bounded by the config (sources x services), as KEDA's rules ask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from skylift.metrics.health import SourceHealth


class SourceHealthMetrics(PromCollector):
    """``health()`` returns the pairs to export (``Collector.health`` in the controller)."""

    def __init__(self, health: Callable[[], Iterable[SourceHealth]]) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "skylift_metric_source_up",
            "1 while a metric source answers for a service, 0 while it fails (metrics MISSING)",
            labels=["source", "service"],
        )
        errors = CounterMetricFamily(
            "skylift_metric_source_errors",
            "Failed polls of a metric source for a service",
            labels=["source", "service"],
        )
        for h in self._health():
            labels = [h.source, h.service]
            up.add_metric(labels, 0.0 if h.failing else 1.0)
            errors.add_metric(labels, float(h.errors))
        yield up
        yield errors

    def describe(self) -> Iterable[Metric]:
        return []  # labels known only once the collector runs; no duplicate check needed
