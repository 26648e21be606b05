"""cpu and memory per service from the replicas' processes (psutil).

A replica is its whole process tree: a server that forks workers uses the
CPU of all of them. CPU time of a tree is counted as the sum, over its live
processes, of their own time plus the time of the children they already
reaped, so a worker that exits between two polls is not lost. Memory is
the RSS of the tree (shared pages of forked workers count once per process,
so this overstates a pre-fork server; it never understates).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil

from skylift.metrics.base import SourceError
from skylift.metrics.resources import Resources
from skylift.model import Replica, ReplicaState

START_TIME_TOLERANCE = 1.0
"""Seconds a process' start time may differ from the replica's record (PID reuse guard)."""

ReplicaLister = Callable[[str], Sequence[Replica]]
"""The controller's current replicas of a service."""


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """One reading of a replica's process tree."""

    cpu_seconds: float  # cumulative user+system, reaped children included
    rss: int  # bytes
    at: float  # monotonic time of the reading
    processes: int


def read_tree(pid: int, started_at: float | None, clock: Callable[[], float]) -> TreeUsage | None:
    """Usage of the tree rooted at ``pid``; None if it is gone or is a different process."""
    try:
        leader = psutil.Process(pid)
        if started_at is not None and abs(leader.create_time() - started_at) > START_TIME_TOLERANCE:
            return None  # the PID now belongs to someone else
        procs = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    cpu = 0.0
    rss = 0
    counted = 0
    for proc in procs:
        try:
            with proc.oneshot():
                t = proc.cpu_times()
                mem = proc.memory_info()
        except psutil.NoSuchProcess:
            continue  # exited meanwhile: its time moves to its parent's children_*
        cpu += t.user + t.system + t.children_user + t.children_system
        rss += mem.rss
        counted += 1
    if counted == 0:
        return None
    return TreeUsage(cpu, rss, clock(), counted)


class ProcessStatsSource:
    """Metric source ``process``: cpu and memory as fractions of the service's request.

    Both are averaged over READY replicas that have a reading; a replica's
    CPU needs two readings, so it counts from its second poll on.
    """

    name = "process"

    def __init__(
        self,
        replicas: ReplicaLister,
        resources: Mapping[str, Resources],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replicas = replicas
        self.resources = dict(resources)
        self.clock = clock
        self._last: dict[str, dict[str, TreeUsage]] = {}  # service -> replica id -> reading

    def provides(self, service: str) -> frozenset[str]:
        res = self.resources.get(service)
        if res is None:
            return frozenset()
        return frozenset(
            name for name, value in (("cpu", res.cpu), ("memory", res.memory)) if value
        )

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        res = self.resources.get(service)
        if res is None or (res.cpu is None and res.memory is None):
            return {}
        ready = [
            (r.id, r.pid, r.started_at)
            for r in self.replicas(service)
            if r.state == ReplicaState.READY and r.pid is not None
        ]
        try:
            readings = await asyncio.to_thread(self._read_all, ready)
        except psutil.AccessDenied as exc:
            raise SourceError(
                f"cannot read process {exc.pid} of service {service}: permission denied",
                "run skylift as the user that runs the replicas",
            ) from exc
        except psutil.Error as exc:
            raise SourceError(f"cannot read the processes of service {service}: {exc}") from exc
        previous = self._last.get(service, {})
        self._last[service] = readings
        out: dict[str, float] = {}
        if res.cpu is not None:
            fractions = []
            for rid, usage in readings.items():
                before = previous.get(rid)
                if before is not None and usage.at > before.at:
                    used = max(0.0, usage.cpu_seconds - before.cpu_seconds)
                    fractions.append(used / (usage.at - before.at) / res.cpu)
            if fractions:
                out["cpu"] = sum(fractions) / len(fractions)
        if res.memory is not None and readings:
            out["memory"] = sum(u.rss for u in readings.values()) / len(readings) / res.memory
        return out

    def _read_all(self, ready: list[tuple[str, int, float | None]]) -> dict[str, TreeUsage]:
        out: dict[str, TreeUsage] = {}
        for rid, pid, started_at in ready:
            usage = read_tree(pid, started_at, self.clock)
            if usage is not None:
                out[rid] = usage
        return out
