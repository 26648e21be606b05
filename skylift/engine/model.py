"""Frozen inputs and outputs of ``decide``: plain slots dataclasses, cheap to build.

Time is a float of seconds on any monotonic scale the caller picks; the engine
only ever compares and subtracts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from skylift.engine.checks import CompiledCheck

Direction = Literal["up", "down", "hold"]
Action = Literal["up", "down", "hold", "missing"]


@dataclass(frozen=True, slots=True)
class Series:
    """Samples of one metric, ``times`` ascending.

    The engine reads only samples with ``time <= now``, found by bisection, so a
    caller may hand over a long history (the simulator passes its whole run).
    """

    times: Sequence[float]
    values: Sequence[float]


@dataclass(frozen=True, slots=True)
class Observations:
    """What the collectors saw. A metric that is ``None`` or has no sample in
    ``(now - window, now]`` is MISSING."""

    window: float = 60.0
    cpu: Series | None = None
    memory: Series | None = None
    rps: Series | None = None
    connections: Series | None = None
    p95_latency: Series | None = None
    queue: Series | None = None


@dataclass(frozen=True, slots=True)
class State:
    """What the engine remembers between decisions, plus the replica status.

    ``recommendations`` feeds the stabilization windows and ``events`` (time,
    signed change) the rate limits; both are pruned to the longest window.
    """

    desired: int
    ready: int
    last_up: float | None = None
    last_down: float | None = None
    recommendations: tuple[tuple[float, int], ...] = ()
    events: tuple[tuple[float, int], ...] = ()
    failures: int = 0

    def with_ready(self, ready: int) -> State:
        """The same memory with a fresh ready count (what the controller observed)."""
        return State(
            self.desired,
            ready,
            self.last_up,
            self.last_down,
            self.recommendations,
            self.events,
            self.failures,
        )


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's opinion: a replica count, or None when its metric is missing."""

    check: CompiledCheck
    value: float | None
    recommendation: int | None
    action: Action

    @property
    def name(self) -> str:
        return self.check.label

    @property
    def reason(self) -> str:
        return self.check.describe(self)


@dataclass(frozen=True, slots=True)
class Clamp:
    """One step that moved the count: ``before`` -> ``after`` and why."""

    stage: str
    before: int
    after: int
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "how many replicas, and why?".

    ``recommended`` is what the checks asked for; each clamp moved it on the way
    to ``desired``. ``proposed`` differs from ``desired`` only in dry-run mode.
    """

    desired: int
    direction: Direction
    current: int
    recommended: int
    proposed: int
    checks: tuple[CheckResult, ...]
    clamps: tuple[Clamp, ...]
    notes: tuple[str, ...]
    state: State

    @property
    def reasons(self) -> tuple[str, ...]:
        """Human sentences, the headline first; built only when someone asks."""
        if self.direction == "hold":
            head = f"hold at {self.desired} replicas"
        else:
            head = f"scale {self.direction} from {self.current} to {self.desired} replicas"
        lines = [head]
        lines.extend(r.reason for r in self.checks)
        lines.append(f"checks combined recommend {self.recommended}")
        lines.extend(f"{c.stage}: {c.before} -> {c.after}: {c.reason}" for c in self.clamps)
        lines.extend(self.notes)
        return tuple(lines)
