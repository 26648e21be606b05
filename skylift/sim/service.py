"""The simulated service: capacity, start-up delay and an M/M/1-per-replica latency model.

Each ready replica is an M/M/1 queue and the balancer splits the load evenly
(round robin). Its response time is exponential with rate ``mu - lambda``, so
p95 = ln(20) / (mu - lambda). ``mu`` is chosen so that a replica at exactly
``capacity`` requests/s has p95 == ``slo``: the SLO breaks exactly when the load
per replica exceeds the capacity, i.e. when ready < demand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LN20 = math.log(20.0)
"""p95 of an exponential distribution with rate 1."""


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """``capacity`` requests/s per replica at the SLO; ``startup`` seconds to become ready."""

    capacity: float
    startup: float = 60.0
    slo: float = 0.5
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.slo <= 0 or self.startup < 0 or self.timeout <= 0:
            raise ValueError("capacity and slo must be > 0, startup >= 0")

    @property
    def service_rate(self) -> float:
        """mu: requests/s one replica completes, so that p95(capacity) == slo."""
        return self.capacity + LN20 / self.slo

    def p95(self, per_replica_rate: float) -> float:
        """p95 latency in seconds at this load per replica, capped at ``timeout``."""
        spare = self.service_rate - per_replica_rate
        if spare <= LN20 / self.timeout:
            return self.timeout
        return LN20 / spare

    def demand(self, rate: float) -> int:
        """Replicas needed to serve ``rate`` requests/s within the SLO (at least one)."""
        return max(1, math.ceil(rate / self.capacity - 1e-9))


def capacity_for_peak(peak_rate: float, peak_replicas: int) -> float:
    """Capacity per replica such that the trace's peak needs exactly ``peak_replicas``."""
    if peak_replicas < 1:
        raise ValueError("peak replicas must be at least 1")
    if peak_rate <= 0:
        raise ValueError("the trace has no requests, so --peak cannot size the capacity")
    return peak_rate / peak_replicas
