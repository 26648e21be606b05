"""Knee finding, the next step rate to try, the bottleneck, and concurrent users: pure.

A step is one open-loop run at a constant offered rate. It *passes* when p95 is
under the SLO, no request failed, and the service kept up (its successful
throughput reached ``KEEP_UP`` of the offered rate: past saturation an open-loop
queue grows through a short step, and p95 alone would lag behind it). A step
the load generator itself could not keep up with (it sent late or too little)
is *untrusted*: it neither passes nor fails, and the search does not use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

KEEP_UP = 0.95
"""A passing step served at least this share of the offered rate, per second."""
GENERATOR_LAG_MS = 100.0
"""Send lag p99 above this means the generator, not the service, fell behind (latency
counts from the scheduled time, so smaller lags only make p95 err high)."""
UNTRUSTED_RUN = 3
"""The search gives up after this many untrusted steps in a row."""
GENERATOR_RATE = 0.97
"""The generator must send at least this share of the offered rate."""
CONTENDED_PCT = 50.0
"""CPU (percent of one core) that processes outside the deployment took on the
service's cores during a step, above which the step is marked ``contended``."""


@dataclass(frozen=True)
class StepResult:
    """One step of a step load: what was offered and what came back."""

    offered_rps: float
    sent_rps: float
    ok_rps: float
    p95_ms: float
    errors: int
    lag_p99_ms: float
    replicas: int = 1
    foreign_cpu_pct: float | None = None
    """CPU other processes used on the service's cores (None: not measured)"""
    cpu_ms_per_ok: float | None = None
    """replica CPU per successful request (Utilization law: D = U / X)"""

    @property
    def contended(self) -> bool:
        """True when other processes took a share of the service's cores: the step still
        counts (that is the host the service runs on) but is reported as such."""
        return self.foreign_cpu_pct is not None and self.foreign_cpu_pct > CONTENDED_PCT

    @property
    def generator_ok(self) -> bool:
        """False when the generator could not send the offered load on time."""
        return (
            self.lag_p99_ms <= GENERATOR_LAG_MS
            and self.sent_rps >= GENERATOR_RATE * self.offered_rps
        )

    def passes(self, slo_ms: float) -> bool:
        """Within the SLO, error-free, and served (see module doc); False if untrusted."""
        return (
            self.generator_ok
            and self.errors == 0
            and self.p95_ms < slo_ms
            and self.ok_rps >= KEEP_UP * self.offered_rps
        )

    def to_dict(self, slo_ms: float) -> dict[str, Any]:
        return {
            **asdict(self),
            "trusted": self.generator_ok,
            "contended": self.contended,
            "passed": self.passes(slo_ms),
        }


@dataclass(frozen=True)
class Knee:
    """The highest passing rate below the lowest failing one (None: no step passed)."""

    max_rps: float | None
    p95_ms: float | None
    first_fail_rps: float | None
    untrusted: int


def find_knee(steps: Sequence[StepResult], slo_ms: float) -> Knee:
    """The max offered rate that passed, counting only passes below every trusted failure.

    A pass above a trusted failure is noise (a machine shared with others), so the
    knee is the best pass under the lowest failure: conservative, as a limit should be.
    """
    trusted = [s for s in steps if s.generator_ok]
    fails = [s.offered_rps for s in trusted if not s.passes(slo_ms)]
    first_fail = min(fails) if fails else None
    passes = [
        s
        for s in trusted
        if s.passes(slo_ms) and (first_fail is None or s.offered_rps < first_fail)
    ]
    best = max(passes, key=lambda s: s.offered_rps, default=None)
    return Knee(
        max_rps=None if best is None else best.offered_rps,
        p95_ms=None if best is None else best.p95_ms,
        first_fail_rps=first_fail,
        untrusted=len(steps) - len(trusted),
    )


def next_rate(
    steps: Sequence[StepResult],
    slo_ms: float,
    *,
    start: float,
    resolution: float,
    ceiling: float,
    floor: float = 0.0,
) -> float | None:
    """The next offered rate: double from ``start`` until a failure, then bisect.

    Stops (None) once pass and failure are within ``resolution`` (a fraction of the
    failing rate: 0.05 = 5 %), or doubling
    passed ``ceiling`` without a failure, or after ``UNTRUSTED_RUN`` untrusted steps in a
    row (an untrusted step is retried at the same rate). Bisection starts from ``floor`` (a rate
    known to pass, e.g. fewer replicas' knee) when no step passed yet. Untrusted
    steps are ignored.
    """
    if len(steps) >= UNTRUSTED_RUN and not any(s.generator_ok for s in steps[-UNTRUSTED_RUN:]):
        return None  # the generator cannot keep up on this host: stop
    knee = find_knee(steps, slo_ms)
    if knee.first_fail_rps is None:
        if knee.max_rps is None:
            return start  # nothing trusted yet: (re)try the first rate
        nxt = knee.max_rps * 2
        return nxt if nxt <= ceiling else None
    low = knee.max_rps if knee.max_rps is not None else floor
    if knee.first_fail_rps - low <= resolution * knee.first_fail_rps:
        return None
    return round((low + knee.first_fail_rps) / 2, 2)


@dataclass(frozen=True)
class Measured:
    """What was sampled during the saturating step (None: could not be seen).

    CPU in percent of one core (a process using two cores reads 200).
    """

    replica_cpu_pct: float | None = None
    host_cpu_pct: float | None = None
    service_cores: int | None = None
    memory_available_pct: float | None = None
    balancer_cpu_pct: float | None = None
    db_connections: int | None = None
    db_max_connections: int | None = None
    foreign_cpu_pct: float | None = None
    """CPU that processes outside the deployment used on the service's cores"""


CPU_BUSY = 85.0
"""Percent of a core (or of the cores) that counts as saturated."""
MEMORY_LOW = 10.0
DB_FULL = 0.9


def classify_bottleneck(m: Measured) -> tuple[str, str]:
    """(bottleneck, evidence) in the order that explains the others.

    Memory first (swapping makes everything slow), then database connections,
    the balancer, then CPU: the replica's own core (a GIL-bound process
    saturates at one core) or the cores given to the service. ``unknown`` when
    nothing measured is saturated (e.g. a slow downstream call).
    """
    if m.memory_available_pct is not None and m.memory_available_pct < MEMORY_LOW:
        return "memory", f"host memory available {m.memory_available_pct:.0f}% < {MEMORY_LOW:g}%"
    if (
        m.db_connections is not None
        and m.db_max_connections
        and m.db_connections >= DB_FULL * m.db_max_connections
    ):
        return (
            "database connections",
            f"{m.db_connections} of {m.db_max_connections} connections in use",
        )
    if m.balancer_cpu_pct is not None and m.balancer_cpu_pct >= CPU_BUSY:
        return "balancer", f"HAProxy at {m.balancer_cpu_pct:.0f}% of a core"
    if m.replica_cpu_pct is not None and m.replica_cpu_pct >= CPU_BUSY:
        return "cpu", f"replica at {m.replica_cpu_pct:.0f}% of a core"
    if m.host_cpu_pct is not None and m.service_cores:
        full = CPU_BUSY * m.service_cores
        if m.host_cpu_pct >= full:
            foreign = (
                f", {m.foreign_cpu_pct:.0f}% of it by other processes"
                if m.foreign_cpu_pct is not None
                else ""
            )
            return (
                "cpu",
                f"service cores at {m.host_cpu_pct:.0f}% of {m.service_cores} core(s){foreign}",
            )
    return "unknown", "no measured resource saturated (CPU, memory, connections, balancer)"


def cpu_per_request(steps: Sequence[StepResult]) -> float | None:
    """Median replica CPU ms per successful request over trusted steps (None: unmeasured).

    Unlike the knee this does not move when other processes share the cores, so
    ``1000 / cpu_per_request`` is what one single-threaded replica carries with a core
    of its own.
    """
    values = sorted(
        s.cpu_ms_per_ok for s in steps if s.generator_ok and s.cpu_ms_per_ok is not None
    )
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def concurrent_users(rps: float, think_s: float, response_s: float) -> int:
    """Little's law: users = throughput x (think time + response time), rounded down.

    Each user sends one request, waits for it, then thinks ``think_s`` seconds.
    """
    if rps < 0 or think_s < 0 or response_s < 0:
        raise ValueError("rps, think time and response time must not be negative")
    return math.floor(rps * (think_s + response_s))
