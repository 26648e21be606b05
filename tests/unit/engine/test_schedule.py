"""Schedules and events: cron parsing, time zones, DST, and their effect on decide()."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from skylift.engine import Observations, ScalingPolicy, Series, State, decide
from skylift.engine.schedule import Cron, Event, Schedule, compile_calendar

BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_cron_parses_lists_ranges_steps_and_sunday_as_0_or_7() -> None:
    cron = Cron.parse("*/15 8-10,20 * * 0")
    assert cron.minutes == (0, 15, 30, 45)
    assert cron.hours == (8, 9, 10, 20)
    assert cron.weekdays == frozenset({7})
    assert Cron.parse("0 0 * * 7").weekdays == frozenset({7})


@pytest.mark.parametrize(
    "bad", ["* * * *", "60 * * * *", "0 24 * * *", "0 8 * * mon", "*/0 * * * *"]
)
def test_cron_rejects_bad_expressions(bad: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        Cron.parse(bad)


def test_schedule_validation_errors() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        Schedule(cron="0 8 * * *", duration=3600, timezone="Mars/Base", min=2)
    with pytest.raises(ValidationError, match="needs min or max"):
        Schedule(cron="0 8 * * *", duration=3600)
    with pytest.raises(ValidationError, match="ends before"):
        Event.model_validate({"name": "x", "start": "2026-01-02", "end": "2026-01-01", "min": 2})


def berlin_office() -> Schedule:
    return Schedule.model_validate(
        {"cron": "0 8 * * 1-5", "duration": "10h", "timezone": "Europe/Berlin", "min": 6}
    )


def test_window_follows_local_time_across_dst() -> None:
    cal = compile_calendar((berlin_office(),), ())
    assert cal is not None
    (s,) = cal.schedules
    # Winter (CET, UTC+1): 08:00 local is 07:00 UTC.
    assert not s.active(ts("2026-01-12T06:59:59+00:00"))
    assert s.active(ts("2026-01-12T07:00:00+00:00"))
    assert s.active(ts("2026-01-12T16:59:59+00:00"))
    assert not s.active(ts("2026-01-12T17:00:00+00:00"))
    # Summer (CEST, UTC+2): 08:00 local is 06:00 UTC; Monday after the spring change.
    assert s.active(ts("2026-03-30T06:00:00+00:00"))
    assert not s.active(ts("2026-03-30T05:59:00+00:00"))
    # Saturday: no window.
    assert not s.active(ts("2026-01-17T10:00:00+00:00"))


def test_fire_in_a_dst_gap_fires_once_after_the_change() -> None:
    s = Schedule(cron="30 2 * * *", duration=600, timezone="Europe/Berlin", min=3)
    cal = compile_calendar((s,), ())
    assert cal is not None
    (c,) = cal.schedules
    # 2026-03-29 02:30 Berlin does not exist; it is read as 03:30 CEST = 01:30 UTC.
    assert c.active(ts("2026-03-29T01:30:00+00:00"))
    assert not c.active(ts("2026-03-29T01:29:00+00:00"))
    # Autumn: 02:30 happens twice; the window opens at the first (00:30 UTC) only.
    assert c.active(ts("2026-10-25T00:30:00+00:00"))
    assert not c.active(ts("2026-10-25T01:35:00+00:00"))


def test_window_longer_than_a_day_and_overnight() -> None:
    s = Schedule(cron="0 22 * * 5", duration=2 * 86400 + 3600, min=4)  # Fri 22:00 UTC + 49h
    cal = compile_calendar((s,), ())
    assert cal is not None
    assert cal.schedules[0].active(ts("2026-01-18T22:59:00+00:00"))  # Sunday
    assert not cal.schedules[0].active(ts("2026-01-18T23:00:00+00:00"))


def obs_cpu(value: float, now: float) -> Observations:
    return Observations(cpu=Series([now - 15.0, now], [value, value]))


def test_decide_raises_floor_only_inside_the_window() -> None:
    policy = ScalingPolicy.model_validate(
        {"preset": "hpa", "max": 20, "schedules": [berlin_office().model_dump()]}
    )
    inside = ts("2026-01-12T09:00:00+00:00")
    outside = ts("2026-01-12T20:00:00+00:00")
    state = State(2, 2)
    d_in = decide(policy, obs_cpu(0.7, inside), state, inside)
    d_out = decide(policy, obs_cpu(0.7, outside), state, outside)
    assert d_in.desired == 6 and d_in.clamps[-1].stage == "min"
    assert "Europe/Berlin" in d_in.clamps[-1].reason
    assert d_out.desired == 2
    # The monotonic `now` and the wall clock may differ: wall wins for the calendar.
    d_wall = decide(policy, obs_cpu(0.7, 100.0), state, 100.0, wall=inside)
    assert d_wall.desired == 6


def test_schedule_max_caps_and_floor_wins_over_a_lower_cap() -> None:
    policy = ScalingPolicy.model_validate(
        {
            "preset": "hpa",
            "max": 20,
            "schedules": [{"cron": "0 0 * * *", "duration": "6h", "max": 3}],
        }
    )
    night = ts("2026-01-12T02:00:00+00:00")
    d = decide(policy, obs_cpu(3.0, night), State(3, 3), night)
    assert d.desired == 3 and d.clamps[-1].stage == "max"
    day = ts("2026-01-12T12:00:00+00:00")
    assert decide(policy, obs_cpu(3.0, day), State(3, 3), day).desired > 3


def test_event_floor_and_multiplier() -> None:
    policy = ScalingPolicy.model_validate(
        {
            "preset": "hpa",
            "max": 50,
            "events": [
                {
                    "name": "launch",
                    "start": "2026-11-27T00:00Z",
                    "end": "2026-11-27T06:00Z",
                    "min": 9,
                },
                {
                    "name": "sale",
                    "start": "2026-11-27T12:00Z",
                    "end": "2026-11-28T00:00Z",
                    "multiplier": 2,
                },
            ],
        }
    )
    state = State(4, 4)
    launch = ts("2026-11-27T01:00:00+00:00")
    sale = ts("2026-11-27T13:00:00+00:00")
    after = ts("2026-11-28T01:00:00+00:00")
    assert decide(policy, obs_cpu(0.7, launch), state, launch).desired == 9
    # cpu 70 % on 4 replicas is exactly on target; planning for 2x load doubles it.
    assert decide(policy, obs_cpu(0.7, sale), state, sale).desired == 8
    assert decide(policy, obs_cpu(0.7, after), state, after).desired == 4


@settings(max_examples=80, deadline=None)
@given(
    st.floats(ts("2026-01-01T00:00:00+00:00"), ts("2026-12-31T00:00:00+00:00")),
    st.floats(0.05, 3.0),
    st.integers(1, 12),
)
def test_schedule_only_raises_the_floor_inside_its_window(
    wall: float, cpu: float, current: int
) -> None:
    plain = ScalingPolicy.model_validate({"preset": "hpa", "max": 20})
    scheduled = plain.model_copy(update={"schedules": (berlin_office(),)})
    scheduled = ScalingPolicy.model_validate(scheduled.model_dump())
    state = State(current, current)
    base = decide(plain, obs_cpu(cpu, wall), state, wall).desired
    got = decide(scheduled, obs_cpu(cpu, wall), state, wall).desired
    local = datetime.fromtimestamp(wall, UTC).astimezone(BERLIN)
    inside = local.isoweekday() <= 5 and 8 <= local.hour < 18
    assert 1 <= got <= 20
    if inside and current < 6:
        assert got == 6  # HPA semantics: below min goes straight to min, metrics next time
    elif inside:
        assert got == max(base, 6)
    else:
        assert got == base
