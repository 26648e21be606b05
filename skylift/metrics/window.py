"""Recent samples per service and metric, handed to the engine as ``Series``.

Memory is bounded twice: samples older than ``retention`` are dropped on
every write, and each series holds at most ``max_samples`` (a collector
called far more often than planned cannot grow it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

from skylift.engine.model import Observations, Series

OBSERVED = ("cpu", "memory", "rps", "connections", "p95_latency", "queue")
"""The metrics ``Observations`` carries (others are kept for status only)."""


class SampleWindow:
    """``(time, value)`` samples of one metric, times strictly ascending."""

    __slots__ = ("_times", "_values", "retention")

    def __init__(self, retention: float, max_samples: int) -> None:
        self.retention = retention
        self._times: deque[float] = deque(maxlen=max_samples)
        self._values: deque[float] = deque(maxlen=max_samples)

    def add(self, t: float, value: float) -> None:
        """Append a sample; a second sample at the same time replaces the first."""
        if self._times:
            last = self._times[-1]
            if t < last:
                return  # out of order: the engine bisects, so keep times sorted
            if t == last:
                self._values[-1] = value
                return
        self._times.append(t)
        self._values.append(value)
        self.trim(t)

    def trim(self, now: float) -> None:
        horizon = now - self.retention
        times, values = self._times, self._values
        while times and times[0] <= horizon:
            times.popleft()
            values.popleft()

    def series(self, now: float) -> Series | None:
        """Samples in ``(now - retention, now]``, or None if there are none."""
        self.trim(now)
        if not self._times or self._times[0] > now:
            return None
        return Series(tuple(self._times), tuple(self._values))

    def latest(self) -> tuple[float, float] | None:
        return (self._times[-1], self._values[-1]) if self._times else None

    def __len__(self) -> int:
        return len(self._times)


class MetricStore:
    """Per-service, per-metric sample windows; ``window`` is also the engine's window.

    ``retention`` (default: ``window``) is how much history is kept: it must
    cover the longest ``for`` duration of a threshold rule, which may be far
    longer than the averaging window.
    """

    def __init__(
        self, window: float = 60.0, max_samples: int = 4096, retention: float | None = None
    ) -> None:
        self.window = window
        self.retention = max(window, retention or window)
        self.max_samples = max_samples
        self._windows: dict[str, dict[str, SampleWindow]] = {}

    def add(self, service: str, metric: str, t: float, value: float) -> None:
        per_service = self._windows.setdefault(service, {})
        window = per_service.get(metric)
        if window is None:
            window = per_service[metric] = SampleWindow(self.retention, self.max_samples)
        window.add(t, value)

    def observations(self, service: str, now: float, missing: Collection[str] = ()) -> Observations:
        """The engine's view of ``service``; metrics in ``missing`` are left out (MISSING)."""
        per_service = self._windows.get(service, {})

        def get(metric: str) -> Series | None:
            window = per_service.get(metric)
            if window is None or metric in missing:
                return None
            return window.series(now)

        return Observations(
            window=self.window,
            cpu=get("cpu"),
            memory=get("memory"),
            rps=get("rps"),
            connections=get("connections"),
            p95_latency=get("p95_latency"),
            queue=get("queue"),
        )

    def latest(self, service: str) -> dict[str, tuple[float, float]]:
        """Newest ``(time, value)`` of every metric of ``service`` (for status pages)."""
        out: dict[str, tuple[float, float]] = {}
        for metric, window in self._windows.get(service, {}).items():
            last = window.latest()
            if last is not None:
                out[metric] = last
        return out

    def forget(self, service: str) -> None:
        self._windows.pop(service, None)
