"""Load history and API-added scaling events: what forecasting needs after a restart.

The forecaster learns daily and weekly seasons, so its history must outlive the
controller process. Each row is one service's metric summed over a bucket:
``(service, metric, step, start) -> total, samples`` (mean = total / samples).
Totals instead of means let a bucket written in two parts (before and after a
restart) and a roll-up to coarser buckets merge exactly.

Resolution and retention (:class:`Retention`, applied by :meth:`History.roll_up`):

- buckets at the forecaster's ``step`` (1 minute by default) for the last 8 days:
  one weekly season plus a day at full resolution;
- older buckets merged into 1-hour buckets, kept for 400 days (about 9,600 rows
  per service and metric, so months of history stay small);
- anything older is deleted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from skylift.store.tables import LoadBucketRow, ScalingEventRow

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Bucket:
    """A metric summed over ``[start, start + step)`` (Unix seconds)."""

    start: float
    step: float
    total: float
    samples: int

    @property
    def mean(self) -> float:
        return self.total / self.samples if self.samples else 0.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How long history is kept at which resolution (seconds)."""

    fine_age: float = 8 * DAY
    """buckets younger than this keep the step they were written with"""
    coarse_step: float = 3600.0
    """older buckets (of a finer step) are merged into buckets this long"""
    keep: float = 400 * DAY
    """buckets older than this are deleted"""


@dataclass(frozen=True, slots=True)
class ScalingEvent:
    """A one-off span added through the API: a floor and/or a load multiplier."""

    id: int
    service: str
    name: str
    start: float
    end: float
    min: int | None
    multiplier: float | None
    created_at: float


class ScalingEventExists(ValueError):
    """A service already has a scaling event of that name."""


def _key(start: float) -> float:
    # Bucket starts are index * step; rounding makes keys robust to float noise.
    return round(start, 3)


class History:
    """Read and write load history and scaling events; each call is one transaction."""

    def __init__(
        self, session: sessionmaker[Session], clock: Callable[[], float] = time.time
    ) -> None:
        self._session = session
        self._clock = clock

    # -- load history --------------------------------------------------------

    def append(self, service: str, metric: str, buckets: Sequence[Bucket]) -> None:
        """Add buckets; one that exists already (same step and start) is merged into."""
        if not buckets:
            return
        with self._session.begin() as session:
            self._merge(session, service, metric, buckets)

    def _merge(
        self, session: Session, service: str, metric: str, buckets: Sequence[Bucket]
    ) -> None:
        lo = min(b.start for b in buckets)
        hi = max(b.start for b in buckets)
        steps = {b.step for b in buckets}
        existing = {
            (row.step, _key(row.start)): row
            for row in session.scalars(
                select(LoadBucketRow).where(
                    LoadBucketRow.service == service,
                    LoadBucketRow.metric == metric,
                    LoadBucketRow.step.in_(steps),
                    LoadBucketRow.start >= lo - 1.0,
                    LoadBucketRow.start <= hi + 1.0,
                )
            )
        }
        for bucket in buckets:
            row = existing.get((bucket.step, _key(bucket.start)))
            if row is None:
                row = LoadBucketRow(
                    service=service,
                    metric=metric,
                    step=bucket.step,
                    start=bucket.start,
                    total=0.0,
                    samples=0,
                )
                session.add(row)
                existing[(bucket.step, _key(bucket.start))] = row
            row.total += bucket.total
            row.samples += bucket.samples

    def load(self, service: str, metric: str, since: float | None = None) -> list[Bucket]:
        """Buckets (any step) starting at or after ``since``, oldest first."""
        query = select(LoadBucketRow).where(
            LoadBucketRow.service == service, LoadBucketRow.metric == metric
        )
        if since is not None:
            query = query.where(LoadBucketRow.start >= since)
        with self._session() as session:
            rows = session.scalars(query.order_by(LoadBucketRow.start, LoadBucketRow.step))
            return [Bucket(r.start, r.step, r.total, r.samples) for r in rows]

    def roll_up(self, now: float, retention: Retention | None = None) -> int:
        """Merge old fine buckets into coarse ones and delete expired ones; rows touched."""
        r = retention or Retention()
        coarse = r.coarse_step
        # Aligned to a coarse boundary, so a coarse bucket never overlaps a fine one.
        cutoff = math.floor((now - r.fine_age) / coarse) * coarse
        with self._session.begin() as session:
            old = list(
                session.scalars(
                    select(LoadBucketRow).where(
                        LoadBucketRow.step < coarse,
                        LoadBucketRow.start < cutoff,
                    )
                )
            )
            merged: dict[tuple[str, str], dict[float, list[float]]] = {}
            for row in old:
                if row.start + row.step > cutoff:
                    continue
                start = math.floor(row.start / coarse) * coarse
                acc = merged.setdefault((row.service, row.metric), {}).setdefault(start, [0.0, 0])
                acc[0] += row.total
                acc[1] += row.samples
                session.delete(row)
            session.flush()
            for (service, metric), sums in merged.items():
                self._merge(
                    session,
                    service,
                    metric,
                    [Bucket(s, coarse, t, int(n)) for s, (t, n) in sorted(sums.items())],
                )
            expired = session.execute(
                delete(LoadBucketRow).where(LoadBucketRow.start < now - r.keep)
            )
            return len(old) + int(getattr(expired, "rowcount", 0))

    def prune(self, before: float) -> int:
        """Delete load buckets that start before ``before``; returns how many."""
        with self._session.begin() as session:
            result = session.execute(delete(LoadBucketRow).where(LoadBucketRow.start < before))
            return int(getattr(result, "rowcount", 0))

    # -- scaling events ------------------------------------------------------

    def add_event(
        self,
        service: str,
        name: str,
        start: float,
        end: float,
        *,
        min: int | None = None,
        multiplier: float | None = None,
    ) -> ScalingEvent:
        """Store an event; raises ScalingEventExists when the name is taken."""
        row = ScalingEventRow(
            service=service,
            name=name,
            starts_at=start,
            ends_at=end,
            min=min,
            multiplier=multiplier,
            created_at=self._clock(),
        )
        try:
            with self._session.begin() as session:
                session.add(row)
        except IntegrityError:
            raise ScalingEventExists(
                f"service {service!r} already has an event named {name!r}: remove it first"
            ) from None
        return _scaling_event(row)

    def events(self, service: str | None = None) -> list[ScalingEvent]:
        """Stored events by start time."""
        query = select(ScalingEventRow).order_by(ScalingEventRow.starts_at, ScalingEventRow.id)
        if service is not None:
            query = query.where(ScalingEventRow.service == service)
        with self._session() as session:
            return [_scaling_event(row) for row in session.scalars(query)]

    def remove_event(self, service: str, name: str) -> bool:
        """Delete an event; False when there was none of that name."""
        with self._session.begin() as session:
            result = session.execute(
                delete(ScalingEventRow).where(
                    ScalingEventRow.service == service, ScalingEventRow.name == name
                )
            )
            return bool(getattr(result, "rowcount", 0))

    def prune_events(self, before: float) -> int:
        """Delete events that ended before ``before``; returns how many."""
        with self._session.begin() as session:
            result = session.execute(
                delete(ScalingEventRow).where(ScalingEventRow.ends_at < before)
            )
            return int(getattr(result, "rowcount", 0))


def _scaling_event(row: ScalingEventRow) -> ScalingEvent:
    return ScalingEvent(
        id=row.id,
        service=row.service,
        name=row.name,
        start=row.starts_at,
        end=row.ends_at,
        min=row.min,
        multiplier=row.multiplier,
        created_at=row.created_at,
    )
