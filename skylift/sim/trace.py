"""Traffic traces: CSV ``t,requests`` with evenly spaced ``t``; a jump in ``t`` is a gap."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path


class TraceError(ValueError):
    """The trace file is unreadable or not in the ``t,requests`` format."""


@dataclass(frozen=True, slots=True)
class Trace:
    """Rows of a trace; ``step`` is the resolution in seconds (the smallest ``t`` gap)."""

    name: str
    times: tuple[int, ...]
    requests: tuple[float, ...]
    step: int

    @property
    def peak_rate(self) -> float:
        """Highest requests/s of any row."""
        return max(self.requests) / self.step

    @property
    def gaps(self) -> int:
        """Number of jumps in ``t`` (intervals with no observation)."""
        return sum(1 for a, b in zip(self.times, self.times[1:], strict=False) if b - a > self.step)


def parse_trace(text: str, name: str = "trace") -> Trace:
    """Parse CSV text; errors name the line so the file can be fixed."""
    lines = text.splitlines()
    if not lines or lines[0].strip().replace(" ", "") != "t,requests":
        raise TraceError(f"{name}: the first line must be the header 't,requests'")
    times: list[int] = []
    requests: list[float] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        left, sep, right = line.partition(",")
        try:
            t = int(left)
            r = float(right)
        except ValueError:
            raise TraceError(
                f"{name}:{number}: expected 't,requests' numbers, got {line!r}"
            ) from None
        if not sep or r < 0 or not math.isfinite(r):
            raise TraceError(f"{name}:{number}: requests must be a number >= 0, got {line!r}")
        if times and t <= times[-1]:
            raise TraceError(f"{name}:{number}: t must increase ({t} after {times[-1]})")
        times.append(t)
        requests.append(r)
    if len(times) < 2:
        raise TraceError(f"{name}: a trace needs at least two rows")
    step = min(b - a for a, b in itertools.pairwise(times))
    if any((b - a) % step for a, b in itertools.pairwise(times)):
        raise TraceError(f"{name}: rows are not on an even {step}s grid")
    return Trace(name, tuple(times), tuple(requests), step)


def load_trace(path: Path) -> Trace:
    """Read a trace file; the trace is named after the file stem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    return parse_trace(text, path.stem)
