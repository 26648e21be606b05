"""Retention: the controller prunes events, decisions and load history on a period.

A controller runs for months; every tick may add an event or a decision, so
without pruning the store (and every listing of it) grows without bound. The
:class:`Pruner` runs as a task of its own beside the service loops, every
``retention.interval`` by the controller's clock, and calls the store in a
worker thread so a slow database never stalls the event loop. A failed pass
(database down) is logged and retried on the next period; nothing is written
to the events table about it, which would defeat the purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError

from skylift.config.settings import RetentionSettings
from skylift.controller.recorder import ControllerMetrics
from skylift.store import Store
from skylift.store.store import Pruned

log = structlog.get_logger("skylift.controller")


class Pruner:
    """Deletes what ``RetentionSettings`` no longer keeps, when a period is due."""

    def __init__(
        self,
        store: Store,
        settings: RetentionSettings,
        metrics: ControllerMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.next_at: float | None = None  # None: the first step prunes
        self.last: Pruned | None = None
        self._pruned = Counter(
            "skylift_store_pruned_rows_total",
            "Rows deleted by retention, by table",
            ["table"],
            registry=metrics.registry,
        )

    def due(self, now: float) -> bool:
        return self.next_at is None or now >= self.next_at

    async def step(self, now: float | None = None) -> Pruned | None:
        """Prune if a period has passed since the last pass; what was deleted (None: not due,
        or the pass failed and is retried next period)."""
        now = self.clock() if now is None else now
        if not self.due(now):
            return None
        self.next_at = now + self.settings.interval
        s = self.settings
        try:
            pruned = await asyncio.to_thread(
                self.store.prune, events=s.events, decisions=s.decisions, history=s.history
            )
        except SQLAlchemyError as exc:  # e.g. the database is down: next period tries again
            log.warning("retention_failed", error=str(exc), retry_in=s.interval)
            return None
        except Exception:  # a bug must not end the task: logged in full, retried
            log.exception("retention_failed", retry_in=s.interval)
            return None
        self.last = pruned
        for table in ("events", "decisions", "history"):
            count = getattr(pruned, table)
            if count:
                self._pruned.labels(table).inc(count)
        if pruned.total:
            log.info(
                "retention_pruned",
                events=pruned.events,
                decisions=pruned.decisions,
                history=pruned.history,
            )
        return pruned

    async def run(self, stop: asyncio.Event) -> None:
        """Step every period until ``stop`` is set."""
        while not stop.is_set():
            await self.step()
            wait = max(0.0, (self.next_at or 0.0) - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.1))
