"""Schedules (cron windows in a time zone) and events (fixed spans) that bound the count.

Pure: everything is evaluated from ``wall``, Unix seconds passed in by the caller
(the controller's ``time.time()``, the simulator's trace start + t). ``zoneinfo``
only reads the tz database; it never reads a clock.

A schedule ``{cron: "0 8 * * 1-5", duration: 10h, timezone: Europe/Berlin, min: 6}``
is active for ``duration`` after each time its cron expression fires, in local
time of its zone: a window that starts at 08:00 local starts at 08:00 both in
summer and in winter. A fire time that falls in a DST gap (02:30 on the spring-
forward night) is read with the offset before the change, i.e. it fires at 03:30;
an ambiguous one (the autumn night) fires once, at its first occurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skylift.units import Duration

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12))
_DOW = ("day of week", 0, 7)


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"cron {name}: bad step {step_text!r}")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise ValueError(f"cron {name}: bad range {body!r}")
            start, end = int(a), int(b)
        elif body.isdigit():
            start = int(body)
            end = high if step_text else start
        else:
            raise ValueError(f"cron {name}: {body!r} is not a number, range or '*'")
        if start < low or end > high or start > end:
            raise ValueError(f"cron {name}: {body!r} outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed 5-field cron expression (minute hour day-of-month month day-of-week).

    Day of week 0 and 7 are Sunday. As in Vixie cron, when both day fields are
    restricted a day matches if EITHER matches.
    """

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expr: str) -> Cron:
        parts = expr.split()
        if len(parts) != 5:
            raise ValueError(
                f"cron {expr!r} needs 5 fields: minute hour day-of-month month day-of-week"
            )
        sets = [_parse_field(p, *spec) for p, spec in zip(parts[:4], _FIELDS, strict=True)]
        weekdays = _parse_field(parts[4], *_DOW)
        weekdays = frozenset(7 if d == 0 else d for d in weekdays)  # ISO: Monday 1 .. Sunday 7
        return cls(
            tuple(sorted(sets[0])),
            tuple(sorted(sets[1])),
            sets[2],
            sets[3],
            weekdays,
            parts[2] == "*",
            parts[4] == "*",
        )

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def last_fire(self, local: datetime, lookback_days: int) -> datetime | None:
        """The latest fire time <= ``local`` (naive local time) within the lookback."""
        limit = (local.hour, local.minute)
        for back in range(lookback_days + 1):
            day = local - timedelta(days=back)
            if not self.day_matches(day):
                continue
            for hour in reversed(self.hours):
                for minute in reversed(self.minutes):
                    if back == 0 and (hour, minute) > limit:
                        continue
                    return day.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Schedule(_Model):
    """A recurring window: for ``duration`` after each cron fire, bound the count."""

    name: str | None = None
    cron: str = Field(description="5-field cron in local time of `timezone`, e.g. '0 8 * * 1-5'")
    duration: Duration = Field(description="how long each window lasts, e.g. '10h'")
    timezone: str = Field("UTC", description="IANA zone, e.g. 'Europe/Berlin'")
    min: int | None = Field(None, ge=1, description="floor while active")
    max: int | None = Field(None, ge=1, description="cap while active (replaces the policy max)")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        Cron.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name like 'UTC'") from None
        return value

    @model_validator(mode="after")
    def _something(self) -> Schedule:
        if self.min is None and self.max is None:
            raise ValueError("a schedule needs min or max (or both)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"schedule min ({self.min}) is greater than its max ({self.max})")
        if self.duration <= 0:
            raise ValueError("a schedule duration must be greater than zero, e.g. '10h'")
        return self


def _epoch(value: Any) -> Any:
    """Accept Unix seconds or an ISO 8601 time; a time without offset is UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"invalid time {value!r}: use ISO 8601, e.g. 2026-11-27T08:00Z"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return value


class Event(_Model):
    """A one-off span (a campaign, a launch): a floor and/or a load multiplier."""

    name: str
    start: float = Field(description="ISO 8601 time (UTC when no offset) or Unix seconds")
    end: float = Field(description="ISO 8601 time (UTC when no offset) or Unix seconds")
    min: int | None = Field(None, ge=1, description="floor while active")
    multiplier: float | None = Field(
        None, gt=0, description="plan for this many times the observed / forecast load"
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return _epoch(value)

    @model_validator(mode="after")
    def _valid(self) -> Event:
        if self.end <= self.start:
            raise ValueError(f"event {self.name!r} ends before it starts")
        if self.min is None and self.multiplier is None:
            raise ValueError(f"event {self.name!r} needs min or multiplier")
        return self


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the calendar says at one instant. ``active`` names the windows that apply."""

    min: int
    max: int
    multiplier: float
    active: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompiledSchedule:
    label: str
    cron: Cron
    duration: float
    zone: ZoneInfo
    min: int | None
    max: int | None
    lookback_days: int
    memo: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], compare=False)
    """[from, until, active]: the answer holds for wall in [from, until). A cache of a
    pure function (cron fires fall on whole minutes), so the simulator pays for the
    time-zone arithmetic once a minute at most, not once per decision."""

    def active(self, wall: float) -> bool:
        """True when ``wall`` lies in [fire, fire + duration) of some fire time."""
        memo = self.memo
        if memo[0] <= wall < memo[1]:
            return memo[2] == 1.0
        end = self._window_end(wall)
        if end is None:
            memo[0], memo[1], memo[2] = wall, (math.floor(wall / 60.0) + 1) * 60.0, 0.0
            return False
        memo[0], memo[1], memo[2] = wall, end, 1.0
        return True

    def _window_end(self, wall: float) -> float | None:
        """End of the window ``wall`` lies in, or None outside every window."""
        local = datetime.fromtimestamp(wall, self.zone).replace(tzinfo=None)
        fire = self.cron.last_fire(local, self.lookback_days)
        while fire is not None:
            start = fire.replace(tzinfo=self.zone).timestamp()
            if start <= wall < start + self.duration:
                return start + self.duration
            if wall - start >= self.duration and start <= wall:
                return None
            # A DST gap can map the naive fire time past ``wall``: look one minute earlier.
            fire = self.cron.last_fire(fire - timedelta(minutes=1), self.lookback_days)
        return None


@dataclass(frozen=True, slots=True)
class Calendar:
    """Compiled schedules and events of one policy."""

    schedules: tuple[CompiledSchedule, ...]
    events: tuple[Event, ...]

    def bounds(self, wall: float, low: int, high: int) -> Bounds:
        """The effective [min, max] and load multiplier at ``wall``.

        Active floors raise ``low`` (the highest wins); an active ``max`` replaces
        ``high`` (the highest active cap wins); overlapping multipliers take the
        largest. The floor wins over a cap that is lower.
        """
        names: list[str] = []
        floor = low
        cap: int | None = None
        mult = 1.0
        for s in self.schedules:
            if s.active(wall):
                names.append(s.label)
                if s.min is not None:
                    floor = max(floor, s.min)
                if s.max is not None:
                    cap = s.max if cap is None else max(cap, s.max)
        for e in self.events:
            if e.start <= wall < e.end:
                names.append(e.name)
                if e.min is not None:
                    floor = max(floor, e.min)
                if e.multiplier is not None:
                    mult = max(mult, e.multiplier)
        top = high if cap is None else cap
        return Bounds(floor, max(top, floor), mult, tuple(names))


def compile_calendar(schedules: tuple[Schedule, ...], events: tuple[Event, ...]) -> Calendar | None:
    """None when there is nothing to evaluate (the hot path then skips it)."""
    if not schedules and not events:
        return None
    compiled = tuple(
        CompiledSchedule(
            s.name or f"schedule {s.cron!r} for {s.duration:g}s ({s.timezone})",
            Cron.parse(s.cron),
            s.duration,
            ZoneInfo(s.timezone),
            s.min,
            s.max,
            math.ceil(s.duration / 86400.0) + 1,
        )
        for s in schedules
    )
    return Calendar(compiled, events)
