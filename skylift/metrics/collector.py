"""The collector: polls every source for every service once per controller tick.

It owns no clock and logs nothing: the controller passes ``now`` and records
the :class:`SourceTransition` objects it drains from :meth:`Collector.transitions`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from skylift.engine.model import Observations
from skylift.metrics.base import MetricSource, SourceError, SourceTransition
from skylift.metrics.health import SourceHealth
from skylift.metrics.window import MetricStore


class Collector:
    """Turns sources into the engine's ``Observations``, one per service.

    - each metric of a service comes from exactly one source (checked here);
    - a poll that takes longer than ``timeout`` seconds is a failure;
    - a source with no fresh sample for ``stale_after`` intervals is failing:
      its metrics are MISSING and one "failing" transition is emitted, then
      one "recovered" when it answers again;
    - every (source, service) pair fails alone: a source that raises for one
      service, even with an unexpected exception (a bug), makes only that
      service's metrics from that source MISSING; the others keep their
      samples. A bug fails its pair at once and rides on the transition
      (``bug``), so the controller logs its traceback.
    """

    def __init__(
        self,
        services: Sequence[str],
        sources: Sequence[MetricSource],
        interval: float,
        window: float = 60.0,
        stale_after: int = 3,
        timeout: float | None = None,
        retention: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.services = tuple(services)
        self.sources = tuple(sources)
        self.timeout = timeout if timeout is not None else interval
        self.store = MetricStore(window, retention=retention)
        self._pending: list[SourceTransition] = []
        self._health: dict[tuple[str, str], SourceHealth] = {}
        self._by_name = {s.name: s for s in self.sources}
        if len(self._by_name) != len(self.sources):
            raise ValueError(f"two sources share a name: {[s.name for s in self.sources]}")
        for service in self.services:
            owner: dict[str, str] = {}
            for source in self.sources:
                provided = source.provides(service)
                for metric in provided:
                    if metric in owner:
                        raise ValueError(
                            f"service {service}: metric {metric} comes from both "
                            f"{owner[metric]} and {source.name}; configure it in one only"
                        )
                    owner[metric] = source.name
                if provided:
                    self._health[(source.name, service)] = SourceHealth(
                        source.name, service, stale_after * interval, tuple(sorted(provided))
                    )

    async def collect(self, now: float) -> dict[str, Observations]:
        """Poll every (source, service) pair concurrently; the engine's view of each service.

        Each pair records its own outcome the moment it has one, so a pair that
        is slow (up to ``timeout``) delays no other pair's samples.
        """
        pairs = [(self._by_name[name], service) for name, service in self._health]
        await asyncio.gather(*(self._collect_pair(src, service, now) for src, service in pairs))
        return {service: self.observations(service, now) for service in self.services}

    async def _collect_pair(self, source: MetricSource, service: str, now: float) -> None:
        health = self._health[(source.name, service)]
        try:
            result = await self._poll(source, service, now)
        except SourceError as exc:
            change = health.failed(now, exc)
        except Exception as exc:  # a bug in one source: that pair fails, logged via `bug`
            error = SourceError(
                f"{source.name} raised {exc!r} for {service}",
                "a bug in skylift: report it with the controller log (it has the traceback)",
            )
            change = health.failed(now, error, bug=exc)
        else:
            for metric, value in result.items():
                self.store.add(service, metric, now, value)
            change = health.ok(now)
        if change is not None:
            self._pending.append(change)

    async def _poll(self, source: MetricSource, service: str, now: float) -> Mapping[str, float]:
        try:
            async with asyncio.timeout(self.timeout):
                return await source.sample(service, now)
        except TimeoutError:
            raise SourceError(
                f"{source.name} did not answer within {self.timeout:g}s",
                "check the load of the host and the source's endpoint",
            ) from None

    def observations(self, service: str, now: float) -> Observations:
        """The current view of ``service`` without polling (failing sources left out)."""
        missing = [
            metric
            for (_, svc), health in self._health.items()
            if svc == service and health.failing
            for metric in health.metrics
        ]
        return self.store.observations(service, now, missing)

    def transitions(self) -> list[SourceTransition]:
        """Health changes since the last call, oldest first (each returned once)."""
        out, self._pending = self._pending, []
        return out

    def failing(self) -> list[SourceHealth]:
        """Every (source, service) currently failing, for status pages."""
        return [h for h in self._health.values() if h.failing]

    def health(self) -> list[SourceHealth]:
        """Every (source, service) pair polled, failing or not (for ``/metrics``)."""
        return list(self._health.values())

    def latest(self, service: str) -> dict[str, tuple[float, float]]:
        """Newest ``(time, value)`` per metric of ``service``, custom metrics included."""
        return self.store.latest(service)
