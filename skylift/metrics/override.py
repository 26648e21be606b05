"""Hand some of a source's metrics to another source, per service.

The collector refuses a metric that two sources provide. When a service
takes, say, ``rps`` from Prometheus, the HAProxy stats source must stop
providing ``rps`` for that service only: :class:`Without` does that.
"""

from __future__ import annotations

from collections.abc import Mapping

from skylift.metrics.base import MetricSource


class Without:
    """``source`` minus the metrics ``excluded[service]`` names for each service."""

    def __init__(self, source: MetricSource, excluded: Mapping[str, frozenset[str]]) -> None:
        self.source = source
        self.name = source.name
        self.excluded = dict(excluded)

    def provides(self, service: str) -> frozenset[str]:
        return self.source.provides(service) - self.excluded.get(service, frozenset())

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        values = await self.source.sample(service, now)
        skip = self.excluded.get(service, frozenset())
        return {metric: value for metric, value in values.items() if metric not in skip}
