"""Load history and scaling events between the autoscalers and the store.

The autoscalers stay free of I/O; this keeper is the edge that:

- after a restart, replays each service's stored history through its forecaster
  (so predictions survive restarts) and loads the events added through the API;
- persists the load buckets the autoscalers closed, in batches (one write per
  ``FLUSH_EVERY`` at most, not one per tick), and rolls old buckets up hourly;
- adds and removes API events: stored first, then the service's calendar is recompiled.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from skylift.controller.autoscaler import Autoscaler
from skylift.controller.recorder import Recorder
from skylift.controller.writer import StoreWriter
from skylift.engine.predictive import CompiledForecast
from skylift.engine.schedule import Event
from skylift.store import Store
from skylift.store.history import Bucket, History, ScalingEvent

log = structlog.get_logger("skylift.controller")

FLUSH_EVERY = 60.0
"""Seconds between writes of closed load buckets (a crash loses at most this much)."""
ROLL_UP_EVERY = 3600.0
"""Seconds between roll-ups of old history into coarse buckets."""
EVENT_KEEP = 7 * 86400.0
"""Stored events are deleted this long after they ended."""
REPLAY_SEASONS = 4
"""History replayed at start-up: this many of the longest season (4 weeks by default)."""
STARTUP_SAMPLES = 20
"""Recent replica start-ups whose median becomes the forecast's lead."""


class NotAutoscaled(KeyError):
    """Events need an autoscale policy: the service has none."""


def as_engine_event(event: ScalingEvent) -> Event:
    return Event(
        name=event.name,
        start=event.start,
        end=event.end,
        min=event.min,
        multiplier=event.multiplier,
    )


def measured_startup(store: Store, service: str) -> float | None:
    """Median seconds from start to ready of the service's recent replicas (None: unknown)."""
    seconds = [
        float(e.data["seconds_to_ready"])
        for e in store.events(service=service, limit=500)
        if e.kind == "replica_ready" and "seconds_to_ready" in e.data
    ][-STARTUP_SAMPLES:]
    return statistics.median(seconds) if seconds else None


def replay_span(cf: CompiledForecast) -> float:
    """History replayed into a fresh forecaster: enough to learn the longest season."""
    return max(cf.min_history, REPLAY_SEASONS * max(cf.seasons, default=1) * cf.step)


class HistoryKeeper:
    """Moves load buckets and scaling events between the autoscalers and the store."""

    def __init__(
        self,
        store: Store,
        autoscalers: Mapping[str, Autoscaler],
        recorder: Recorder,
        writer: StoreWriter | None = None,
    ) -> None:
        self.store = store
        self.writer = writer  # with one, flushes are queued to its thread, never made here
        self.autoscalers = autoscalers
        self.recorder = recorder
        self.last_flush: float | None = None
        self.last_roll_up: float | None = None
        self._pending: dict[str, list[Bucket]] = {}

    # -- start-up -------------------------------------------------------------

    def restore(self, wall: float) -> None:
        """Load API events and replay stored history into each forecaster."""
        history = self.store.history
        for name, autoscaler in self.autoscalers.items():
            autoscaler.set_events([as_engine_event(e) for e in history.events(name)])
            metric = autoscaler.forecast_metric
            cf = autoscaler.compiled.forecast
            if metric is None or cf is None:
                continue
            buckets = history.load(name, metric, since=wall - replay_span(cf))
            startup = measured_startup(self.store, name)
            learned = autoscaler.restore(buckets, startup)
            self.recorder.event(
                "forecast_restored",
                f"forecast replayed {learned / 3600.0:.1f}h of stored {metric} history "
                f"({len(buckets)} buckets); scaling ahead by "
                f"{autoscaler.forecaster.lead if autoscaler.forecaster else 0:g}s",
                service=name,
                buckets=len(buckets),
                history_s=learned,
                startup_s=startup,
            )
        self.last_flush = self.last_roll_up = wall

    # -- running --------------------------------------------------------------

    def flush(self, wall: float, *, everything: bool = False) -> None:
        """Persist closed buckets when ``FLUSH_EVERY`` has passed (or ``everything`` now)."""
        if self.last_flush is None:
            self.last_flush = wall
        if not everything and wall - self.last_flush < FLUSH_EVERY:
            return
        self.last_flush = wall
        history = self.store.history
        for name, autoscaler in self.autoscalers.items():
            metric = autoscaler.forecast_metric
            if metric is None:
                continue
            if self.writer is not None:
                taken = list(autoscaler.take_history(everything))
                if taken:  # kept (and retried) by the writer while the store is down
                    self.writer.submit(
                        f"history {name} ({len(taken)} buckets)",
                        functools.partial(history.append, name, metric, taken),
                    )
                continue
            pending = self._pending.setdefault(name, [])
            pending.extend(autoscaler.take_history(everything))
            if not pending:
                continue
            try:
                history.append(name, metric, pending)
            except SQLAlchemyError as exc:  # kept in memory; the next flush retries
                log.warning(
                    "history_not_stored", service=name, buckets=len(pending), error=str(exc)
                )
                continue
            pending.clear()
        if self.last_roll_up is None or wall - self.last_roll_up >= ROLL_UP_EVERY:
            self.last_roll_up = wall
            if self.writer is not None:
                self.writer.submit(
                    "history roll-up", functools.partial(_roll_up, self.store.history, wall)
                )
                return
            try:
                _roll_up(history, wall)
            except SQLAlchemyError as exc:
                log.warning("history_roll_up_failed", error=str(exc))

    # -- events added through the API ------------------------------------------

    def _autoscaler(self, service: str) -> Autoscaler:
        try:
            return self.autoscalers[service]
        except KeyError:
            raise NotAutoscaled(service) from None

    def add_event(self, service: str, event: Event) -> ScalingEvent:
        """Store the event and apply it from the next decision on."""
        autoscaler = self._autoscaler(service)
        stored = self.store.history.add_event(
            service, event.name, event.start, event.end, min=event.min, multiplier=event.multiplier
        )
        self._reload(service, autoscaler)
        self.recorder.event(
            "scaling_event_added",
            f"scaling event {event.name!r} added: {_describe(stored)}",
            service=service,
            name=event.name,
        )
        return stored

    def remove_event(self, service: str, name: str) -> bool:
        autoscaler = self._autoscaler(service)
        removed = self.store.history.remove_event(service, name)
        if removed:
            self._reload(service, autoscaler)
            self.recorder.event(
                "scaling_event_removed", f"scaling event {name!r} removed", service=service
            )
        return removed

    def events(self, service: str) -> list[dict[str, Any]]:
        """Config events and stored ones, each marked with where it comes from."""
        autoscaler = self._autoscaler(service)
        out: list[dict[str, Any]] = [
            {**e.model_dump(), "source": "config"} for e in autoscaler.policy.events
        ]
        for e in self.store.history.events(service):
            out.append(
                {
                    "name": e.name,
                    "start": e.start,
                    "end": e.end,
                    "min": e.min,
                    "multiplier": e.multiplier,
                    "source": "api",
                    "created_at": e.created_at,
                }
            )
        return out

    def _reload(self, service: str, autoscaler: Autoscaler) -> None:
        autoscaler.set_events([as_engine_event(e) for e in self.store.history.events(service)])
        autoscaler.next_at = 0.0  # decide at the next tick, not a whole interval later


def _roll_up(history: History, wall: float) -> None:
    history.roll_up(wall)
    history.prune_events(wall - EVENT_KEEP)


def _describe(event: ScalingEvent) -> str:
    parts = []
    if event.min is not None:
        parts.append(f"min {event.min}")
    if event.multiplier is not None:
        parts.append(f"{event.multiplier:g}x load")
    return f"{', '.join(parts)} from {event.start:.0f} to {event.end:.0f} (Unix s)"
