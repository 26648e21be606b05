"""The narrow role every metric source plays, its typed failure, and the
transition objects the collector hands to the controller.

Errors a source raises (the collector catches exactly these)::

    SourceError          this poll failed; ``what`` says what failed and why,
                         ``hint`` what the operator should do about it
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


class SourceError(Exception):
    """A source could not produce samples this time (temporary unless it persists)."""

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what
        self.hint = hint
        super().__init__(f"{what}: {hint}" if hint else what)


@runtime_checkable
class MetricSource(Protocol):
    """Answers "the samples of service S at time ``now``".

    ``provides`` names the metrics the source is responsible for, so the
    collector knows which ones turn MISSING when the source fails. ``sample``
    may return fewer of them (no data yet, e.g. no request in the window);
    it raises :class:`SourceError` when it cannot answer at all.
    """

    @property
    def name(self) -> str: ...

    def provides(self, service: str) -> frozenset[str]: ...

    async def sample(self, service: str, now: float) -> Mapping[str, float]: ...


TransitionKind = Literal["failing", "recovered"]


@dataclass(frozen=True, slots=True)
class SourceTransition:
    """A source changed health for one service; emitted once per change."""

    source: str
    service: str
    kind: TransitionKind
    at: float
    message: str
    metrics: tuple[str, ...] = ()
    bug: BaseException | None = field(default=None, compare=False)
    """The unexpected exception (not a :class:`SourceError`) behind a "failing", to log."""

    def __str__(self) -> str:
        return self.message
