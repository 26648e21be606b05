"""Which of the controller's loops is alive, and what a stuck one waits on.

Liveness is "every loop made progress recently", not "the HTTP server
answers": a service loop waiting on a hung dockerd, a collector that no longer
completes a pass, a store writer blocked in one call. ``/livez`` answers 503
with the stuck loops named, since when they last made progress and what they
are waiting on, so an operator (or a supervisor's log) sees the cause at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ReportsWaits(Protocol):
    """A dependency that can say which of its calls are in flight (e.g. a Docker backend)."""

    def waits(self) -> list[tuple[str, float]]:
        """``(what, since)`` of each call in flight, ``since`` on the monotonic clock."""
        ...


@dataclass(slots=True)
class Beat:
    """One loop's progress: when it last completed a pass, what it waits on now."""

    name: str
    started: float  # monotonic: when the loop was registered
    last_ok: float | None = None  # monotonic
    last_ok_wall: float | None = None
    waiting_on: str | None = None
    waiting_since: float | None = None  # monotonic
    last_error: str | None = None
    dependency: ReportsWaits | None = None


class Liveness:
    """Heartbeats of the controller's loops; a loop is stuck after ``limit`` seconds
    without a completed pass."""

    def __init__(
        self,
        limit: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.clock = clock
        self.wall = wall
        self.beats: dict[str, Beat] = {}
        # other parts that say themselves whether they are stuck (the store writer):
        # called with the limit, they return a view with "stuck": bool, or None
        self.extra: dict[str, Callable[[float], dict[str, Any] | None]] = {}

    def register(self, name: str, dependency: ReportsWaits | None = None) -> Beat:
        beat = self.beats.get(name)
        if beat is None:
            beat = self.beats[name] = Beat(name, started=self.clock(), dependency=dependency)
        return beat

    def forget(self, name: str) -> None:
        """A loop that ended on purpose (its service was removed by `apply`)."""
        self.beats.pop(name, None)

    def ok(self, name: str) -> None:
        """The loop completed a pass."""
        beat = self.register(name)
        beat.last_ok, beat.last_ok_wall = self.clock(), self.wall()
        beat.waiting_on = beat.waiting_since = beat.last_error = None

    def failing(self, name: str, what: str, error: str) -> None:
        """The loop could not complete a pass because ``what`` failed; since is the first."""
        beat = self.register(name)
        if beat.waiting_on != what or beat.waiting_since is None:
            beat.waiting_on, beat.waiting_since = what, self.clock()
        beat.last_error = error

    @contextmanager
    def waiting(self, name: str, what: str) -> Iterator[None]:
        """Mark the loop as waiting on ``what`` while the block runs."""
        beat = self.register(name)
        mine = beat.waiting_on is None  # else a failure being retried keeps its first time
        if mine:
            beat.waiting_on, beat.waiting_since = what, self.clock()
        try:
            yield
        finally:
            if mine and beat.waiting_on == what:
                beat.waiting_on = beat.waiting_since = None

    def check(self) -> tuple[bool, dict[str, Any]]:
        """``(live, body)``: body names every stuck loop and why."""
        now, wall = self.clock(), self.wall()
        stuck: list[dict[str, Any]] = []
        loops: dict[str, Any] = {}
        for beat in self.beats.values():
            reference = beat.last_ok if beat.last_ok is not None else beat.started
            age = now - reference
            view = self._view(beat, now, wall)
            loops[beat.name] = view
            if age >= self.limit:
                stuck.append(view)
        for name, report in self.extra.items():
            view_extra = report(self.limit)
            if view_extra is not None:
                loops[name] = view_extra
                if view_extra.get("stuck"):
                    stuck.append(view_extra)
        body: dict[str, Any] = {"live": not stuck, "limit_seconds": self.limit, "loops": loops}
        if stuck:
            body["stuck"] = stuck
            body["message"] = "; ".join(_sentence(view) for view in stuck)
        return not stuck, body

    def _view(self, beat: Beat, now: float, wall: float) -> dict[str, Any]:
        reference = beat.last_ok if beat.last_ok is not None else beat.started
        view: dict[str, Any] = {
            "loop": beat.name,
            "seconds_since_progress": round(now - reference, 1),
            "last_progress": beat.last_ok_wall,
            "waiting_on": beat.waiting_on,
            "waiting_since": (
                None if beat.waiting_since is None else wall - (now - beat.waiting_since)
            ),
            "last_error": beat.last_error,
        }
        if beat.dependency is not None:
            waits = beat.dependency.waits()
            if waits:
                what, since = min(waits, key=lambda w: w[1])
                view["dependency_call"] = what
                view["dependency_call_seconds"] = round(now - since, 1)
        return view


def _sentence(view: dict[str, Any]) -> str:
    out = f"{view['loop']} made no progress"
    if view.get("seconds_since_progress") is not None:
        out += f" for {view['seconds_since_progress']}s"
    if view.get("waiting_on"):
        out += f", waiting on {view['waiting_on']}"
    if view.get("dependency_call"):
        out += f" ({view['dependency_call']} in flight for {view['dependency_call_seconds']}s)"
    if view.get("last_error"):
        out += f": {view['last_error']}"
    return out
