"""Health of one source for one service: fresh, or failing since when and why.

Pure: fed the outcome of each poll, it returns a transition exactly when the
state changes. A single failed poll is tolerated (its metrics keep their
recent samples); the source is *failing* once it has produced no fresh
sample for ``stale_after`` seconds, and its metrics are then MISSING. An
unexpected exception (a bug, not an outage) makes it failing at once: a bug
does not go away by waiting, and its samples cannot be trusted.
"""

from __future__ import annotations

from skylift.metrics.base import SourceError, SourceTransition


class SourceHealth:
    """Tracks one (source, service) pair; see the module docstring."""

    __slots__ = (
        "errors",
        "failing",
        "last_error",
        "last_ok",
        "metrics",
        "service",
        "source",
        "stale_after",
        "started",
    )

    def __init__(
        self, source: str, service: str, stale_after: float, metrics: tuple[str, ...] = ()
    ) -> None:
        self.source = source
        self.service = service
        self.stale_after = stale_after
        self.metrics = metrics
        self.started: float | None = None
        self.last_ok: float | None = None
        self.last_error: SourceError | None = None
        self.failing = False
        self.errors = 0  # failed polls since start (exported as a counter)

    def ok(self, now: float) -> SourceTransition | None:
        """A poll succeeded at ``now``."""
        if self.started is None:
            self.started = now
        self.last_ok = now
        self.last_error = None
        if not self.failing:
            return None
        self.failing = False
        return SourceTransition(
            self.source,
            self.service,
            "recovered",
            now,
            f"source {self.source} for service {self.service} recovered"
            + (f": {', '.join(self.metrics)} observed again" if self.metrics else ""),
            self.metrics,
        )

    def failed(
        self, now: float, error: SourceError, bug: BaseException | None = None
    ) -> SourceTransition | None:
        """A poll failed at ``now`` with ``error`` (``bug``: the unexpected exception behind it)."""
        if self.started is None:
            self.started = now
        self.last_error = error
        self.errors += 1
        if self.failing:
            return None
        since = self.last_ok if self.last_ok is not None else self.started
        if bug is None and now - since < self.stale_after:
            return None
        self.failing = True
        lost = f"; {', '.join(self.metrics)} MISSING" if self.metrics else ""
        age = (
            f"no fresh sample for {now - self.last_ok:.0f}s"
            if self.last_ok is not None
            else "no sample yet"
        )
        return SourceTransition(
            self.source,
            self.service,
            "failing",
            now,
            f"source {self.source} for service {self.service} failing ({age}{lost}): {error}",
            self.metrics,
            bug,
        )
