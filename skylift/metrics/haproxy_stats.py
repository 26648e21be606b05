"""rps, connections and queue per service from HAProxy's ``show stat``.

``rps`` is a rate taken here from the backend's cumulative request counter
rather than HAProxy's own ``rate`` column (sessions/s over the last second
only, and no request rate for backends in 2.6): the counter averages over
the whole poll interval and misses nothing between polls.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from skylift.metrics.base import SourceError

STAT_COMMAND = "show stat -1 6 -1"
"""Backend (2) and server (4) rows of every proxy."""


class StatsCommand(Protocol):
    """Sends one runtime API command and returns the answer (``RuntimeClient`` is one)."""

    async def command(self, command: str) -> str: ...


def parse_stat_rows(text: str) -> list[dict[str, str]]:
    """Rows of ``show stat`` CSV as dicts keyed by HAProxy's column names."""
    text = text.lstrip()
    if not text.startswith("# pxname"):
        first = text.splitlines()[0] if text else "(empty answer)"
        raise ValueError(f"not a show stat answer: {first[:200]!r}")
    return [
        {key: value or "" for key, value in row.items() if key}  # trailing comma: no name
        for row in csv.DictReader(io.StringIO(text[2:]))
        if row.get("pxname")
    ]


def _int(row: Mapping[str, str], key: str) -> int | None:
    value = (row.get(key) or "").strip()
    return int(value) if value.isdigit() else None


class CounterRate:
    """Per-second rate of a cumulative counter, across counter resets.

    A counter that goes down was reset (HAProxy reloaded: the new worker
    counts from 0), so the increase since the last poll is the new value,
    as Prometheus' ``rate`` assumes.
    """

    __slots__ = ("_last", "resets")

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.resets = 0

    def update(self, t: float, value: int) -> float | None:
        """Record ``value`` at ``t``; the rate since the previous poll, None on the first."""
        last = self._last
        if last is not None and t <= last[0]:
            return None  # same poll twice or time went back: no interval to divide by
        self._last = (t, value)
        if last is None:
            return None
        increase = value - last[1]
        if increase < 0:
            self.resets += 1
            increase = value
        return increase / (t - last[0])


@dataclass(frozen=True, slots=True)
class Traffic:
    """What HAProxy counted for a backend in a window, and what is still running now.

    A request is counted when it starts and logged when it ends, so up to
    ``in_flight`` of the ``counted`` requests cannot have a log line yet.
    """

    counted: int
    in_flight: int

    @property
    def finished(self) -> int:
        """Requests that must have ended (so been logged) within the window, at least."""
        return max(0, self.counted - self.in_flight)


class CounterHistory:
    """Recent ``(time, value)`` readings of a cumulative counter, for "how many in the window".

    Bounded by ``keep`` seconds of age and ``max_points`` readings; a drop in
    the counter is a reset (HAProxy reloaded), counted as in :class:`CounterRate`.
    """

    __slots__ = ("_points", "keep")

    def __init__(self, keep: float, max_points: int = 4096) -> None:
        self.keep = keep
        self._points: deque[tuple[float, int]] = deque(maxlen=max_points)

    def add(self, t: float, value: int) -> None:
        points = self._points
        if points and t <= points[-1][0]:
            return  # same poll twice (two sources asked in one tick) or time went back
        points.append((t, value))
        while len(points) > 2 and points[1][0] <= t - self.keep:
            points.popleft()

    def increase(self, now: float, window: float) -> int | None:
        """Counted in the readings inside ``[now - window, now]``; None with fewer than two."""
        inside = [(t, v) for t, v in self._points if now - window <= t <= now]
        if len(inside) < 2:
            return None
        total = 0
        for (_, before), (_, after) in itertools.pairwise(inside):
            total += after - before if after >= before else after
        return total


def _default_backend(service: str) -> str:
    from skylift.lb.render import backend_name  # lazy: lb may import metrics

    return backend_name(service)


class HAProxyStatsSource:
    """Metric source ``haproxy-stats``: rps, connections (``scur``), queue (``qcur``).

    One ``show stat`` per poll serves every service: the answer is cached for
    the ``now`` it was fetched at. :meth:`requests` answers "did HAProxy
    count requests for this service lately", which the latency source needs
    to tell an idle service from a broken log pipeline.
    """

    name = "haproxy-stats"
    METRICS = frozenset({"rps", "connections", "queue"})

    def __init__(
        self,
        client: StatsCommand,
        backend_of: Callable[[str], str] = _default_backend,
        metrics: frozenset[str] = METRICS,
    ) -> None:
        unknown = metrics - self.METRICS
        if unknown:
            raise ValueError(f"haproxy-stats cannot provide {sorted(unknown)}")
        self.client = client
        self.backend_of = backend_of
        self.metrics = metrics
        self._rates: dict[str, CounterRate] = {}
        self._counts: dict[str, CounterHistory] = {}
        self.history = 300.0  # seconds of request counts kept for :meth:`requests`
        self._cache: tuple[float, list[dict[str, str]] | SourceError] | None = None
        self._lock = asyncio.Lock()

    def provides(self, service: str) -> frozenset[str]:
        return self.metrics

    async def _rows(self, now: float) -> list[dict[str, str]]:
        async with self._lock:
            if self._cache is None or self._cache[0] != now:
                self._cache = (now, await self._fetch())
            result = self._cache[1]
        if isinstance(result, SourceError):
            raise result
        return result

    async def _fetch(self) -> list[dict[str, str]] | SourceError:
        from skylift.lb.errors import HAProxyError  # lazy: lb may import metrics

        try:
            return parse_stat_rows(await self.client.command(STAT_COMMAND))
        except (HAProxyError, OSError, ValueError) as exc:
            return SourceError(
                f"HAProxy runtime API '{STAT_COMMAND}' failed: {exc}",
                "check that HAProxy is running (skylift status) and its stats socket exists",
            )

    def _summary(self, rows: list[dict[str, str]], service: str) -> dict[str, str]:
        backend = self.backend_of(service)
        summary = next(
            (r for r in rows if r.get("pxname") == backend and r.get("svname") == "BACKEND"), None
        )
        if summary is None:
            raise SourceError(
                f"backend {backend} is not in HAProxy's stats",
                "the running HAProxy has an older config: reload it (skylift up)",
            )
        return summary

    def _count(self, service: str, summary: Mapping[str, str], now: float) -> int:
        """The backend's cumulative request counter, also kept for :meth:`requests`."""
        counter = _int(summary, "req_tot")
        if counter is None:  # TCP mode: no HTTP requests, count sessions
            counter = _int(summary, "stot") or 0
        history = self._counts.get(service)
        if history is None:
            history = self._counts[service] = CounterHistory(self.history)
        history.add(now, counter)
        return counter

    async def requests(self, service: str, now: float, window: float) -> Traffic | None:
        """Requests HAProxy counted for ``service`` in the last ``window`` seconds.

        None until two polls lie in the window (too early to tell); raises
        :class:`SourceError` when HAProxy cannot be asked.
        """
        rows = await self._rows(now)
        summary = self._summary(rows, service)
        self._count(service, summary, now)
        history = self._counts[service]
        history.keep = max(history.keep, window)
        counted = history.increase(now, window)
        if counted is None:
            return None
        backend = self.backend_of(service)
        queued = sum(_int(r, "qcur") or 0 for r in rows if r.get("pxname") == backend)
        return Traffic(counted, (_int(summary, "scur") or 0) + queued)

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        rows = await self._rows(now)
        summary = self._summary(rows, service)
        backend = self.backend_of(service)
        out: dict[str, float] = {}
        if "connections" in self.metrics:
            out["connections"] = float(_int(summary, "scur") or 0)
        if "queue" in self.metrics:
            # The backend's own queue plus requests queued on a given server.
            mine = (r for r in rows if r.get("pxname") == backend)
            out["queue"] = float(sum(_int(r, "qcur") or 0 for r in mine))
        counter = self._count(service, summary, now)
        if "rps" in self.metrics:
            rate = self._rates.setdefault(service, CounterRate()).update(now, counter)
            if rate is not None:
                out["rps"] = rate
        return out
