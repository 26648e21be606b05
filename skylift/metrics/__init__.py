"""Metrics: what the engine observes, from process stats, HAProxy and Prometheus.

The controller builds the sources, hands them to a :class:`Collector` and
calls ``collect(now)`` each tick; ``transitions()`` tells it which source
started or stopped failing. Everything else is private to this package.
"""

from skylift.metrics.base import MetricSource, SourceError, SourceTransition
from skylift.metrics.collector import Collector
from skylift.metrics.haproxy_log import LOG_FORMAT, LogRecord, parse_line
from skylift.metrics.haproxy_stats import CounterRate, HAProxyStatsSource, StatsCommand
from skylift.metrics.latency import LatencySource, LatencyTracker, LogSocket, backend_map
from skylift.metrics.process import ProcessStatsSource
from skylift.metrics.prometheus import PrometheusSource
from skylift.metrics.quantiles import SlidingQuantiles
from skylift.metrics.resources import Resources, parse_cpu, parse_memory

__all__ = [
    "LOG_FORMAT",
    "Collector",
    "CounterRate",
    "HAProxyStatsSource",
    "LatencySource",
    "LatencyTracker",
    "LogRecord",
    "LogSocket",
    "MetricSource",
    "ProcessStatsSource",
    "PrometheusSource",
    "Resources",
    "SlidingQuantiles",
    "SourceError",
    "SourceTransition",
    "StatsCommand",
    "backend_map",
    "parse_cpu",
    "parse_line",
    "parse_memory",
]
