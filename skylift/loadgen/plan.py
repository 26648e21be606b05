"""What to send and when: a ``LoadPlan`` is a target, a path and a send schedule."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from skylift.loadgen.schedule import constant_schedule, schedule_from_segments, trace_segments
from skylift.sim.trace import Trace, load_trace

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_IN_FLIGHT = 1000


@dataclass(frozen=True)
class LoadPlan:
    """One run. ``send_times`` are ascending offsets in seconds from the start.

    ``timeout`` (seconds) caps each request from its actual send;
    ``max_in_flight`` bounds concurrent requests (and the connection pool):
    a request due while the bound is reached is counted as the
    ``overload_client`` error instead of being delayed, which would hide load.
    """

    target: str
    path: str
    send_times: tuple[float, ...]
    timeout: float = DEFAULT_TIMEOUT_S
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    headers: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        url = urlsplit(self.target)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(
                f"target must be an http(s) URL like http://127.0.0.1:8080, got {self.target!r}"
            )
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {self.path!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if any(b < a for a, b in itertools.pairwise(self.send_times)):
            raise ValueError("send_times must be ascending")

    @property
    def duration(self) -> float:
        """Offset of the last scheduled send (0 for an empty plan)."""
        return self.send_times[-1] if self.send_times else 0.0


def constant_plan(
    target: str,
    path: str,
    rps: float,
    duration: float,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    headers: Mapping[str, str] | None = None,
) -> LoadPlan:
    """``rps`` requests/s, evenly spaced, for ``duration`` seconds."""
    return LoadPlan(
        target=target,
        path=path,
        send_times=tuple(constant_schedule(rps, duration)),
        timeout=timeout,
        max_in_flight=max_in_flight,
        headers=dict(headers or {}),
        description=f"constant {rps:g} rps for {duration:g}s",
    )


def trace_plan(
    target: str,
    path: str,
    trace: str | Path | Trace,
    peak_rps: float,
    *,
    speed: float = 1.0,
    max_duration: float | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    headers: Mapping[str, str] | None = None,
) -> LoadPlan:
    """Replay a ``t,requests`` trace (file or parsed) with its peak at ``peak_rps``.

    ``speed`` compresses trace time (speed 60 plays a trace minute in a second)
    at unchanged rates; ``max_duration`` cuts the replay after that many
    seconds of replay time. Gaps in the trace send nothing. A bad file raises
    ``skylift.sim.trace.TraceError`` (a ``ValueError``) naming the line.
    """
    if isinstance(trace, str | Path):
        trace = load_trace(Path(trace))
    segments = trace_segments(trace, peak_rps=peak_rps, speed=speed)
    return LoadPlan(
        target=target,
        path=path,
        send_times=tuple(schedule_from_segments(segments, limit=max_duration)),
        timeout=timeout,
        max_in_flight=max_in_flight,
        headers=dict(headers or {}),
        description=f"{trace.name} at peak {peak_rps:g} rps, speed {speed:g}x",
    )
