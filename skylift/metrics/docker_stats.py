"""cpu and memory per service from the Docker stats API (docker and swarm replicas).

Why the Engine's numbers and not psutil on the container's PID: the Engine
reports the container's whole cgroup (every process in it, however the app
forks) and works the same when ``DOCKER_HOST`` points elsewhere, where host
PIDs mean nothing. One ``one_shot`` stats call per replica and poll (a few
milliseconds; the streaming default waits a second for a second sample), so
CPU is the difference of the cgroup's cumulative usage between our own polls,
just as the process source does with CPU times.

Memory is the cgroup's usage minus its inactive page cache, the number
``docker stats`` shows (cgroup v1 calls it ``total_inactive_file``, v2
``inactive_file``): page cache the kernel can drop is not pressure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from skylift.metrics.base import SourceError
from skylift.metrics.process import ReplicaLister
from skylift.metrics.resources import Resources
from skylift.model import ReplicaState


@runtime_checkable
class ContainerStats(Protocol):
    """A container backend that can read its containers' stats from the Engine."""

    def stats(self, container_id: str) -> Mapping[str, Any]:
        """``GET /containers/{id}/stats`` (one shot); empty when the container is gone."""
        ...


@dataclass(frozen=True, slots=True)
class ContainerUsage:
    """One reading of a container's cgroup."""

    cpu_seconds: float  # cumulative, all CPUs
    memory: int  # bytes, usage minus inactive page cache
    at: float  # monotonic time of the reading


def usage_from(stats: Mapping[str, Any], at: float) -> ContainerUsage | None:
    """Parse a stats document; None for a stopped container (the Engine sends zeros)."""
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = stats.get("memory_stats") or {}
    if "total_usage" not in cpu or "usage" not in memory:
        return None
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return ContainerUsage(
        cpu_seconds=float(cpu["total_usage"]) / 1e9,
        memory=max(0, int(memory["usage"]) - int(inactive)),
        at=at,
    )


class DockerStatsSource:
    """Metric source ``docker``: cpu and memory as fractions of each replica's request.

    The request is the service's ``resources`` or, field by field, its
    container limits (``cpus``, ``memory``): see ``Service.request``.
    """

    name = "docker"

    def __init__(
        self,
        replicas: ReplicaLister,
        resources: Mapping[str, Resources],
        engines: Mapping[str, ContainerStats],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replicas = replicas
        self.resources = dict(resources)
        self.engines = dict(engines)
        self.clock = clock
        self._last: dict[str, dict[str, ContainerUsage]] = {}  # service -> replica -> reading
        # reads run in threads of their own, one at a time per service: a hung dockerd
        # never piles up threads (the collector's timeout abandons a read, not its thread)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="docker-stats"
        )
        self._reading: dict[str, tuple[concurrent.futures.Future[Any], float]] = {}

    def provides(self, service: str) -> frozenset[str]:
        res = self.resources.get(service)
        if res is None or service not in self.engines:
            return frozenset()
        return frozenset(
            name for name, value in (("cpu", res.cpu), ("memory", res.memory)) if value
        )

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        res = self.resources.get(service)
        engine = self.engines.get(service)
        if engine is None or res is None or (res.cpu is None and res.memory is None):
            return {}
        ready = {
            r.id: str(r.handle["container_id"])
            for r in self.replicas(service)
            if r.state == ReplicaState.READY and r.handle.get("container_id")
        }
        previous_read = self._reading.get(service)
        if previous_read is not None and not previous_read[0].done():
            raise SourceError(
                f"the Docker stats read of service {service} started "
                f"{time.monotonic() - previous_read[1]:.0f}s ago has not returned",
                "check that dockerd answers (`docker info`)",
            )
        future = self._executor.submit(self._read_all, engine, ready)
        self._reading[service] = (future, time.monotonic())
        try:
            readings = await asyncio.wrap_future(future)
        except Exception as exc:  # the Engine is down or refuses: these metrics go missing
            raise SourceError(
                f"cannot read Docker stats of service {service}: {exc}",
                "check that dockerd runs and that skylift may use its socket",
            ) from exc
        previous = self._last.get(service, {})
        self._last[service] = readings
        out: dict[str, float] = {}
        if res.cpu is not None:
            fractions = [
                max(0.0, u.cpu_seconds - before.cpu_seconds) / (u.at - before.at) / res.cpu
                for rid, u in readings.items()
                if (before := previous.get(rid)) is not None and u.at > before.at
            ]
            if fractions:
                out["cpu"] = sum(fractions) / len(fractions)
        if res.memory is not None and readings:
            out["memory"] = sum(u.memory for u in readings.values()) / len(readings) / res.memory
        return out

    def _read_all(
        self, engine: ContainerStats, containers: Mapping[str, str]
    ) -> dict[str, ContainerUsage]:
        out: dict[str, ContainerUsage] = {}
        for rid, container_id in containers.items():
            usage = usage_from(engine.stats(container_id), self.clock())
            if usage is not None:
                out[rid] = usage
        return out
