"""Plain, immutable rows handed out by the store (no ORM objects leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened: a start, a crash, a scale decision applied, ..."""

    id: int
    ts: float
    kind: str
    message: str
    service: str | None = None
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """A scaling decision as recorded: how many, which way, and why."""

    id: int
    ts: float
    service: str
    desired: int
    direction: str
    reasons: list[str]
    inputs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the controller keeps per service across restarts."""

    name: str
    desired: int | None
    configured: int | None
    crash_state: dict[str, Any]
    updated_at: float
