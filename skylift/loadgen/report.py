"""What a load run measured: a mutable recorder during the run, a frozen report after.

Latency is measured from each request's *scheduled* send time, so time spent
waiting behind a slow system is counted (no coordinated omission). Every
request whose time came is counted in ``sent`` and ends either ``ok`` (2xx) or
as one error kind, so ``ok + errors == sent`` always holds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Error kinds besides ``http_<status>``; kept here so callers can match on them.
CONNECT = "connect"
TIMEOUT = "timeout"
READ = "read"
WRITE = "write"
OTHER = "other"
OVERLOAD_CLIENT = "overload_client"

CLIENT_SIDE = frozenset({OVERLOAD_CLIENT, "http_408"})
"""Error kinds that say the *client* fell behind, not the system under test: an
``overload_client`` request never left (``max_in_flight`` requests were open); a 408
is the server (HAProxy's ``timeout http-request``) giving up on a client that
connected but was too slow to send its request, as a starved client loop is. A slow
server shows as ``timeout`` or 5xx, so leaving these out of ``failed`` hides nothing."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default).

    ``sorted_values`` must be sorted ascending; an empty sequence gives 0.0 so
    reports stay JSON numbers (``sent == 0`` says there was nothing to measure).
    """
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    n = len(sorted_values)
    if n == 0:
        return 0.0
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True)
class LoadProgress:
    """A snapshot for progress lines; counts so far, ``elapsed_s`` since the run started."""

    elapsed_s: float
    planned: int
    sent: int
    ok: int
    errors: int
    in_flight: int


@dataclass(frozen=True)
class LoadReport:
    """The result of one run. Latencies in ms; rates in requests/s.

    ``rate`` is the achieved send rate (sent over the span of the send
    schedule actually used); ``throughput`` is ok responses over the whole run
    including the wait for the last responses. ``lag_*`` is how late requests
    left compared to their schedule (the load generator's own health: large
    lag means the client, not the server, was the bottleneck). ``failed`` counts
    the errors of the system under test and ``client_errors`` the client's own
    (``errors == failed + client_errors``): a load test asserts on ``failed``.
    """

    target: str
    path: str
    planned: int
    sent: int
    ok: int
    errors: int
    errors_by_kind: dict[str, int]
    status_codes: dict[str, int]
    replicas: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    rate: float
    throughput: float
    duration_s: float
    lag_p99_ms: float
    lag_max_ms: float
    stopped_early: bool

    @property
    def client_errors(self) -> int:
        """Requests lost to the client falling behind (kinds in ``CLIENT_SIDE``)."""
        return sum(n for kind, n in self.errors_by_kind.items() if kind in CLIENT_SIDE)

    @property
    def failed(self) -> int:
        """Requests sent that the system under test failed: every error but the client's."""
        return self.errors - self.client_errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``skylift load -o json`` output)."""
        return {
            "target": self.target,
            "path": self.path,
            "planned": self.planned,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "failed": self.failed,
            "client_errors": self.client_errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "status_codes": dict(self.status_codes),
            "replicas": dict(self.replicas),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "rate": self.rate,
            "throughput": self.throughput,
            "duration_s": self.duration_s,
            "lag_p99_ms": self.lag_p99_ms,
            "lag_max_ms": self.lag_max_ms,
            "stopped_early": self.stopped_early,
        }


@dataclass
class Recorder:
    """Accumulates outcomes during a run; single-threaded (one event loop)."""

    planned: int
    sent: int = 0
    ok: int = 0
    in_flight: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, all sent requests
    lags: list[float] = field(default_factory=list)  # seconds late at send
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    status_codes: Counter[str] = field(default_factory=Counter)
    replicas: Counter[str] = field(default_factory=Counter)
    last_send: float = 0.0  # offset of the latest send actually due

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def error(self, kind: str, latency: float | None) -> None:
        self.errors_by_kind[kind] += 1
        if latency is not None:
            self.latencies.append(latency)

    def response(self, status: int, latency: float, replica: str | None) -> None:
        self.status_codes[str(status)] += 1
        self.latencies.append(latency)
        if replica is not None:
            self.replicas[replica] += 1
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.errors_by_kind[f"http_{status}"] += 1

    def progress(self, elapsed: float) -> LoadProgress:
        return LoadProgress(elapsed, self.planned, self.sent, self.ok, self.errors, self.in_flight)

    def report(self, *, target: str, path: str, duration: float, stopped_early: bool) -> LoadReport:
        """Freeze into a report; sorting is O(n log n), fine for a few 100k samples."""
        lat = sorted(self.latencies)
        lags = sorted(self.lags)
        ms = 1000.0
        return LoadReport(
            target=target,
            path=path,
            planned=self.planned,
            sent=self.sent,
            ok=self.ok,
            errors=self.errors,
            errors_by_kind=dict(sorted(self.errors_by_kind.items())),
            status_codes=dict(sorted(self.status_codes.items())),
            replicas=dict(sorted(self.replicas.items())),
            p50_ms=percentile(lat, 50) * ms,
            p95_ms=percentile(lat, 95) * ms,
            p99_ms=percentile(lat, 99) * ms,
            max_ms=(lat[-1] if lat else 0.0) * ms,
            mean_ms=(sum(lat) / len(lat) if lat else 0.0) * ms,
            rate=_rate(self.sent, self.last_send),
            throughput=self.ok / duration if duration > 0 else 0.0,
            duration_s=duration,
            lag_p99_ms=percentile(lags, 99) * ms,
            lag_max_ms=(lags[-1] if lags else 0.0) * ms,
            stopped_early=stopped_early,
        )


def _rate(sent: int, last_send: float) -> float:
    """Sends per second over the send span; ``n`` sends evenly spaced span ``n - 1`` gaps."""
    if sent < 2 or last_send <= 0:
        return float(sent)
    return (sent - 1) / last_send
