"""Load history and scaling events in the SQLite store: merge, roll-up, retention."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skylift.store import Store
from skylift.store.history import DAY, Bucket, Retention, ScalingEventExists


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(state_dir=tmp_path / "state", clock=lambda: 5000.0) as opened:
        yield opened


def test_append_merges_partial_buckets_and_load_filters(store: Store) -> None:
    h = store.history
    h.append("web", "rps", [Bucket(60.0, 60.0, 100.0, 10), Bucket(120.0, 60.0, 50.0, 5)])
    h.append("web", "rps", [Bucket(120.0, 60.0, 30.0, 5)])  # the same bucket after a restart
    h.append("api", "rps", [Bucket(60.0, 60.0, 1.0, 1)])
    got = h.load("web", "rps")
    assert [(b.start, b.total, b.samples) for b in got] == [(60.0, 100.0, 10), (120.0, 80.0, 10)]
    assert got[1].mean == 8.0
    assert [b.start for b in h.load("web", "rps", since=100.0)] == [120.0]
    assert h.load("web", "connections") == []


def test_roll_up_merges_old_fine_buckets_and_deletes_expired(store: Store) -> None:
    h = store.history
    now = 1000 * DAY
    r = Retention(fine_age=1 * DAY, coarse_step=3600.0, keep=10 * DAY)
    old_hour = now - 3 * DAY  # a whole hour, well past fine_age
    fine = [Bucket(old_hour + 60.0 * i, 60.0, 10.0 * (i + 1), 2) for i in range(60)]
    recent = [Bucket(now - 600.0, 60.0, 7.0, 1)]
    expired = [Bucket(now - 11 * DAY, 3600.0, 5.0, 5)]
    h.append("web", "rps", fine + recent + expired)
    touched = h.roll_up(now, r)
    assert touched == 61
    got = h.load("web", "rps")
    assert [(b.start, b.step) for b in got] == [(old_hour, 3600.0), (now - 600.0, 60.0)]
    coarse = got[0]
    assert coarse.samples == 120 and coarse.total == sum(10.0 * (i + 1) for i in range(60))
    assert h.roll_up(now, r) == 0  # idempotent: coarse buckets are not rolled again


def test_roll_up_keeps_fine_buckets_of_the_open_coarse_hour(store: Store) -> None:
    h = store.history
    now = 100 * DAY + 1800.0  # half past an hour
    r = Retention(fine_age=3600.0, coarse_step=3600.0)
    # cutoff = floor((now - 1h) / 1h) * 1h = 100 d - 1 h
    inside = Bucket(100 * DAY - 3660.0, 60.0, 1.0, 1)  # ends at the cutoff: rolled up
    after = Bucket(100 * DAY - 3540.0, 60.0, 1.0, 1)  # older than 1 h, but its hour is open
    h.append("web", "rps", [inside, after])
    h.roll_up(now, r)
    steps = {b.start: b.step for b in h.load("web", "rps")}
    assert steps == {100 * DAY - 7200.0: 3600.0, after.start: 60.0}


def test_scaling_events_add_list_remove(store: Store) -> None:
    h = store.history
    e = h.add_event("web", "launch", 100.0, 200.0, min=4)
    assert e.id >= 1 and e.created_at == 5000.0 and e.multiplier is None
    h.add_event("web", "promo", 50.0, 80.0, multiplier=2.0)
    h.add_event("api", "launch", 100.0, 200.0, min=2)
    assert [x.name for x in h.events("web")] == ["promo", "launch"]
    with pytest.raises(ScalingEventExists, match="already has an event named 'launch'"):
        h.add_event("web", "launch", 300.0, 400.0, min=1)
    assert h.remove_event("web", "launch") is True
    assert h.remove_event("web", "launch") is False
    assert [x.service for x in h.events()] == ["web", "api"]
    assert h.prune_events(before=100.0) == 1  # promo ended at 80
    assert [x.name for x in h.events()] == ["launch"]
