"""The I/O of ``skylift capacity``: step load against a running deployment.

Open-loop steps (``skylift.loadgen``) at rising rates, each its own run so a
queue never spills into the next step; CPU and memory sampled with psutil
over each step; the generator pinned to one core and the service's processes
(replicas with their threads and children, HAProxy) to the others with
``sched_setaffinity`` (the system call ``taskset`` makes), restored afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import psutil

from skylift.loadgen import constant_plan, run_load
from skylift.plan.knee import Measured, StepResult

Log = Callable[[str], None]
DB_PORTS = (5432, 6432)


@dataclass
class Pinning:
    """Which cores the generator and the service got (None: not pinned, one core)."""

    generator: set[int] | None
    service: set[int] | None
    saved: dict[int, set[int]] = field(default_factory=dict)

    @property
    def service_cores(self) -> int:
        return len(self.service) if self.service else (os.cpu_count() or 1)


def plan_pinning() -> Pinning:
    """The generator on the last allowed core, the service on the rest (2+ cores)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return Pinning(None, None)
    return Pinning({cores[-1]}, set(cores[:-1]))


def _tasks(pids: Iterable[int]) -> Iterator[int]:
    """Every thread id of ``pids`` and their children (affinity is per thread)."""
    seen: set[int] = set()
    for pid in pids:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                for thread in proc.threads():
                    if thread.id not in seen:
                        seen.add(thread.id)
                        yield thread.id


def pin(pinning: Pinning, service_pids: Iterable[int], log: Log) -> None:
    """Pin this process to the generator core and the service's threads to the others."""
    if pinning.generator is None or pinning.service is None:
        log("one core: the generator shares it with the service (not pinned)")
        return
    for tid in _tasks(service_pids):
        try:
            pinning.saved.setdefault(tid, set(os.sched_getaffinity(tid)))
            os.sched_setaffinity(tid, pinning.service)
        except (ProcessLookupError, PermissionError) as exc:  # gone, or not ours: say so
            log(f"could not pin thread {tid}: {exc}")
    for tid in _tasks([os.getpid()]):
        pinning.saved.setdefault(tid, set(os.sched_getaffinity(tid)))
        os.sched_setaffinity(tid, pinning.generator)


def unpin(pinning: Pinning) -> None:
    """Give every pinned thread its old cores back (threads that ended are skipped)."""
    for tid, cores in pinning.saved.items():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(tid, cores)
    pinning.saved.clear()


class Sampler:
    """CPU of the replicas and the balancer, and host memory, over one step."""

    def __init__(
        self,
        replica_pids: list[int],
        balancer_pids: list[int],
        pinning: Pinning,
        db_max_connections: int | None = None,
    ):
        self.replicas = self._procs(replica_pids)
        self.balancer = self._procs(balancer_pids)
        self.generator = psutil.Process()
        self.pinning = pinning
        self.db_max = db_max_connections

    def db_connections(self) -> int | None:
        """Established connections from the replicas to PostgreSQL/PgBouncer ports."""
        if self.db_max is None:
            return None
        count = 0
        for proc in self.replicas:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                count += sum(
                    1
                    for c in proc.net_connections(kind="tcp")
                    if c.raddr and c.raddr.port in DB_PORTS and c.status == psutil.CONN_ESTABLISHED
                )
        return count

    @staticmethod
    def _procs(pids: Iterable[int]) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                out += [proc, *proc.children(recursive=True)]
        return out

    def start(self) -> None:
        for proc in [*self.replicas, *self.balancer, self.generator]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc.cpu_percent(None)
        psutil.cpu_percent(None, percpu=True)

    def stop(self) -> Measured:
        """CPU since ``start``: each process is read once (``cpu_percent`` resets on read)."""

        def read(proc: psutil.Process) -> float | None:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                return float(proc.cpu_percent(None))
            return None

        replicas = [v for v in map(read, self.replicas) if v is not None]
        balancer = [v for v in map(read, self.balancer) if v is not None]
        generator = read(self.generator) or 0.0
        per_cpu = psutil.cpu_percent(None, percpu=True)
        cores = self.pinning.service or set(range(len(per_cpu)))
        host = sum(per_cpu[c] for c in cores if c < len(per_cpu))
        own = sum(replicas) + sum(balancer)
        if self.pinning.generator is None:  # not pinned: the generator shares the cores
            own += generator
        memory = psutil.virtual_memory()
        return Measured(
            foreign_cpu_pct=max(0.0, host - own),
            replica_cpu_pct=max(replicas) if replicas else None,
            host_cpu_pct=host,
            service_cores=len(cores),
            memory_available_pct=memory.available / memory.total * 100.0,
            balancer_cpu_pct=sum(balancer) if balancer else None,
            db_connections=self.db_connections(),
            db_max_connections=self.db_max,
        )


def run_step(
    target: str,
    path: str,
    rps: float,
    seconds: float,
    sampler: Sampler,
    *,
    replicas: int,
    timeout: float,
) -> tuple[StepResult, Measured]:
    """One open-loop step at ``rps`` for ``seconds``; the generator's own lag is kept."""
    plan = constant_plan(target, path, rps, seconds, timeout=timeout)
    sampler.start()
    report = asyncio.run(run_load(plan))
    measured = sampler.stop()
    cpu_ms = None
    if replicas == 1 and measured.replica_cpu_pct is not None and report.ok:
        cpu_ms = measured.replica_cpu_pct / 100.0 * report.duration_s * 1000.0 / report.ok
    return (
        StepResult(
            offered_rps=rps,
            sent_rps=report.rate,
            ok_rps=report.throughput,
            p95_ms=report.p95_ms,
            errors=report.errors,
            lag_p99_ms=report.lag_p99_ms,
            replicas=replicas,
            foreign_cpu_pct=measured.foreign_cpu_pct,
            cpu_ms_per_ok=cpu_ms,
        ),
        measured,
    )
