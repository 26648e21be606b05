"""Send-time schedules for open-loop load: pure functions, no clock, no I/O.

Schedules are built up front as offsets in seconds from the start of the run,
so the runner only has to wait for each time and fire; a slow response can
never push later sends back (no coordinated omission).

Every schedule is the deterministic inverse of a cumulative intensity: request
``k`` leaves when the expected number of requests so far reaches ``k``. For a
constant rate this is ``k / rps``; for a trace the intensity is piecewise
constant per trace row, and a gap in the trace contributes nothing. Traces
are read by ``skylift.sim.trace`` (one parser for the simulator and replay).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from skylift.sim.trace import Trace

_EPS = 1e-9


@dataclass(frozen=True)
class Segment:
    """A stretch of the replay timeline at a constant rate (replay seconds, requests/s)."""

    start: float
    end: float
    rate: float


def trace_segments(trace: Trace, *, peak_rps: float, speed: float = 1.0) -> list[Segment]:
    """Map trace rows to replay segments: the busiest row runs at ``peak_rps``.

    Rates are scaled by ``peak_rps / peak_rate`` (so the shape is kept and the
    busiest interval runs at ``peak_rps``); time is divided by ``speed``, which
    compresses the trace without changing the replayed rates. Missing rows
    yield no segment, so nothing is sent during a gap.
    """
    if peak_rps <= 0:
        raise ValueError("peak_rps must be positive")
    if speed <= 0:
        raise ValueError("speed must be positive")
    peak = max(trace.requests)
    scale = 0.0 if peak == 0 else peak_rps / peak
    t0 = trace.times[0]
    return [
        Segment((t - t0) / speed, (t - t0 + trace.step) / speed, requests * scale)
        for t, requests in zip(trace.times, trace.requests, strict=True)
    ]


def schedule_from_segments(
    segments: Iterable[Segment], *, limit: float | None = None
) -> list[float]:
    """Send offsets for piecewise-constant rates, evenly spread, fractions carried over.

    ``limit`` cuts the schedule at that many seconds (sends at ``t < limit``).
    """
    times: list[float] = []
    expected = 0.0  # requests expected up to the start of the current segment
    k = 0  # index of the next request to place
    for seg in segments:
        end = seg.end if limit is None else min(seg.end, limit)
        if seg.rate <= 0 or end <= seg.start:
            if limit is not None and seg.start >= limit:
                break
            continue
        total = expected + seg.rate * (end - seg.start)
        while k < total - _EPS:
            times.append(seg.start + (k - expected) / seg.rate)
            k += 1
        expected = total
    return times


def constant_schedule(rps: float, duration: float) -> list[float]:
    """``ceil(rps * duration)`` sends, one every ``1 / rps`` seconds from 0."""
    if rps <= 0:
        raise ValueError("rps must be positive")
    if duration < 0:
        raise ValueError("duration must not be negative")
    return schedule_from_segments([Segment(0.0, duration, rps)])
