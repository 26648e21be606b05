"""Runs the pure engine for one service at its policy interval.

It keeps the engine's ``State`` between decisions (the stabilization and
rate-limit memory), the service's ``Forecaster`` when the policy forecasts, the
load buckets not yet persisted, and the last decision for ``skylift explain``.
No I/O: ``skylift.controller.history`` moves buckets and events to and from the store.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from skylift.controller.budget import Ceiling
from skylift.engine import Decision, Observations, ScalingPolicy, State, compile_policy, decide
from skylift.engine.model import Series
from skylift.engine.predictive import Forecaster, Outlook
from skylift.engine.schedule import Bounds, Event, compile_calendar
from skylift.store.history import Bucket

_METRICS = ("cpu", "memory", "rps", "connections", "p95_latency", "queue")
_STAMP = 1e-3
"""Offset of a replayed sample after its bucket's start (the forecaster floors t - 1e-6)."""
DEFAULT_STARTUP = 60.0
"""Replica start-up the forecast scales ahead by when neither config nor history says."""


class Autoscaler:
    """One service's autoscaling: ``due`` says when, ``evaluate`` decides."""

    def __init__(
        self,
        service: str,
        policy: ScalingPolicy,
        startup: float = DEFAULT_STARTUP,
        ceiling: Ceiling | None = None,
    ) -> None:
        self.service = service
        self.policy = policy
        self.ceiling = ceiling  # the connection budget, above every other bound
        self.compiled = compile_policy(policy)
        self.state: State | None = None
        self.last: Decision | None = None
        self.last_at: float | None = None
        self.last_inputs: dict[str, float | None] = {}
        self.next_at = 0.0
        self.events: tuple[Event, ...] = ()
        self.bounds: Bounds | None = None
        self.outlook: Outlook | None = None
        self.startup = startup
        cf = self.compiled.forecast
        self.forecaster = Forecaster(cf, policy.interval, startup) if cf is not None else None
        self.buffer = LoadBuffer(cf.step) if cf is not None else None
        self.paused_since: float | None = None  # `skylift autoscale pause` (wall time)

    @property
    def forecast_metric(self) -> str | None:
        """The metric the forecaster learns (and the store keeps history of), if any."""
        cf = self.compiled.forecast
        return cf.metric if cf is not None else None

    def set_events(self, events: Sequence[Event]) -> None:
        """Apply API-added events next to the config's: recompile the (pure) calendar."""
        self.events = tuple(events)
        calendar = compile_calendar(self.policy.schedules, self.policy.events + self.events)
        self.compiled = dataclasses.replace(self.compiled, calendar=calendar)

    def restore(self, buckets: Sequence[Bucket], startup: float | None = None) -> float:
        """Start the forecaster afresh and replay stored history through it.

        ``startup`` (a measured start-up delay) replaces the one given at construction
        when the policy does not set ``forecast.startup``. Returns the seconds learned.
        """
        cf = self.compiled.forecast
        if cf is None:
            return 0.0
        if startup is not None:
            self.startup = startup
        self.forecaster = Forecaster(cf, self.policy.interval, self.startup)
        times, values = expand(buckets, cf.step)
        if times:
            self.outlook = self.forecaster.advance(Series(times, values), times[-1], times[-1])
        return self.forecaster.history

    def take_history(self, everything: bool = False) -> list[Bucket]:
        """Closed load buckets not yet persisted; ``everything`` adds the open one."""
        return self.buffer.take(everything) if self.buffer is not None else []

    @property
    def paused(self) -> bool:
        """Held by the config's ``paused: true`` or by an operator's ``autoscale pause``."""
        return self.compiled.paused

    def pause(self, since: float) -> None:
        """Hold the current count (the engine's ``paused``) until :meth:`resume`."""
        self.paused_since = since
        self.compiled = dataclasses.replace(self.compiled, paused=True)

    def resume(self) -> None:
        """Decide again from the next interval on (the config's ``paused`` still holds)."""
        self.paused_since = None
        self.compiled = dataclasses.replace(self.compiled, paused=self.policy.paused)
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def clamp(self, desired: int) -> int:
        """Where a count set by hand or by config lands inside [min, max] (and the budget)."""
        count = max(self.policy.min, min(self.policy.max, desired))
        return self.ceiling.cap(count) if self.ceiling is not None else count

    def evaluate(
        self, obs: Observations, current: int, ready: int, now: float, wall: float
    ) -> Decision:
        """Decide from what was observed; a manual scale since last time becomes the base.

        ``now`` is the controller's monotonic clock (what the samples carry);
        ``wall`` is Unix time at ``now``, for schedules and events.
        """
        if self.state is None:
            state = State(desired=current, ready=ready)
        elif self.state.desired != current:
            state = dataclasses.replace(self.state, desired=current, ready=ready)
        else:
            state = self.state.with_ready(ready)
        outlook = None
        if self.forecaster is not None and self.buffer is not None:
            series = getattr(obs, self.forecaster.cf.metric)
            outlook = self.outlook = self.forecaster.advance(series, now, wall)
            self.buffer.add(series, now, wall)
        calendar = self.compiled.calendar
        self.bounds = calendar.bounds(wall, self.policy.min, self.policy.max) if calendar else None
        decision = decide(self.compiled, obs, state, now, wall=wall, outlook=outlook)
        if self.ceiling is not None:
            decision = self.ceiling.clamp(decision)
        self.state = decision.state
        self.last = decision
        self.last_at = now
        self.last_inputs = latest_values(obs, now)
        self.next_at = now + self.policy.interval
        return decision

    def explain(self, now: float) -> dict[str, Any]:
        """Inputs, each check's recommendation and every clamp of the last decision."""
        decision = self.last
        if decision is None:
            return {"service": self.service, "decided": False, "reason": "no decision yet"}
        return {
            "service": self.service,
            "decided": True,
            "seconds_ago": round(now - (self.last_at or now), 1),
            "next_in": round(max(0.0, self.next_at - now), 1),
            "inputs": self.last_inputs,
            "current": decision.current,
            "desired": decision.desired,
            "direction": decision.direction,
            "recommended": decision.recommended,
            "dry_run": self.policy.dry_run,
            "paused": self.paused,
            "min": self.policy.min,
            "max": self.policy.max,
            "checks": [
                {
                    "check": r.name,
                    "value": r.value,
                    "recommendation": r.recommendation,
                    "action": r.action,
                    "reason": r.reason,
                }
                for r in decision.checks
            ],
            "clamps": [
                {"stage": c.stage, "before": c.before, "after": c.after, "reason": c.reason}
                for c in decision.clamps
            ],
            "reasons": list(decision.reasons),
            "calendar": self._calendar_view(),
            "forecast": self.forecast_view(),
        }

    def _calendar_view(self) -> dict[str, Any] | None:
        b = self.bounds
        if b is None:
            return None
        return {"active": list(b.active), "min": b.min, "max": b.max, "multiplier": b.multiplier}

    def forecast_view(self) -> dict[str, Any] | None:
        """The last outlook and the forecast's own error so far (None without a forecast)."""
        f = self.forecaster
        if f is None:
            return None
        o = self.outlook
        stats = {k: _finite(v) for k, v in f.stats().to_dict().items()}
        return {
            "metric": f.cf.metric,
            "ready": f.ready,
            "history_s": round(f.history, 1),
            "needs_s": f.cf.min_history,
            "lead_s": f.lead,
            "point": None if o is None else round(o.point, 4),
            "upper": None if o is None else round(o.upper, 4),
            "replicas": None if o is None else o.replicas,
            "note": None if o is None else o.note,
            "stats": stats,
        }


class LoadBuffer:
    """Rolls new samples of the forecast metric into ``step`` buckets (wall time).

    The same bucketing as the forecaster's, so history written here replays into
    the same buckets after a restart. Closed buckets wait in memory until the
    controller persists them in a batch.
    """

    def __init__(self, step: float) -> None:
        self.step = step
        self._seen = -math.inf  # wall time of the newest sample taken
        self._open: int | None = None
        self._sum = 0.0
        self._n = 0
        self._closed: list[Bucket] = []

    def add(self, series: Series | None, now: float, wall: float) -> None:
        """Take the samples newer than the last call (``times`` on the ``now`` scale)."""
        if series is None:
            return
        offset = wall - now
        times, values = series.times, series.values
        lo = bisect_right(times, self._seen - offset)
        hi = bisect_right(times, now)
        for k in range(lo, hi):
            index = math.floor((times[k] + offset - 1e-6) / self.step)
            if index != self._open:
                self._close()
                self._open = index
            self._sum += values[k]
            self._n += 1
        if hi > lo:
            self._seen = times[hi - 1] + offset

    def _close(self) -> None:
        if self._open is not None and self._n:
            self._closed.append(Bucket(self._open * self.step, self.step, self._sum, self._n))
        self._sum, self._n = 0.0, 0

    def take(self, everything: bool = False) -> list[Bucket]:
        """Hand over closed buckets (and the open one's samples so far, if ``everything``)."""
        if everything:
            self._close()  # the rest of this bucket merges into the stored row later
        out, self._closed = self._closed, []
        return out


def expand(buckets: Sequence[Bucket], step: float) -> tuple[list[float], list[float]]:
    """Stored buckets as forecaster samples: one per ``step`` bucket.

    A coarse (rolled-up) bucket becomes its mean in every step it spans, so the
    seasons keep their slots; a finer one becomes one sample the forecaster averages.
    Samples are stamped just after the bucket's start, not at its end: the last
    bucket may be the partial one written at shutdown, and live samples of the
    same bucket after a quick restart must still count.
    """
    times: list[float] = []
    values: list[float] = []
    for b in buckets:
        first = math.floor(b.start / step + 1e-9)
        last = max(first, math.ceil((b.start + b.step) / step - 1e-9) - 1)
        mean = b.mean
        for index in range(first, last + 1):
            t = index * step + _STAMP
            if times and t < times[-1]:
                continue  # overlaps what came before (e.g. a changed step): keep order
            times.append(t)
            values.append(mean)
    return times, values


def _finite(value: float | int) -> float | int | None:
    """NaN (no forecast scored yet) as None, so the API can send strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def latest_values(obs: Observations, now: float) -> dict[str, float | None]:
    """The newest sample of each metric inside the window, None when missing."""
    out: dict[str, float | None] = {}
    for name in _METRICS:
        series = getattr(obs, name)
        value = None
        if series is not None and series.times and now - series.times[-1] < obs.window:
            value = round(float(series.values[-1]), 6)
        out[name] = value
    return out


def reason_label(decision: Decision) -> str:
    """A bounded label for the decisions counter: what moved (or held) the count."""
    if decision.clamps:
        return decision.clamps[-1].stage.replace(" ", "_")
    if decision.direction == "hold":
        return "steady"
    for result in decision.checks:
        if result.recommendation == decision.recommended:
            return result.check.metric
    return "checks"
