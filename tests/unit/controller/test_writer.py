"""The store writer: ordered, coalescing, bounded while the store is down, flushed on close.

A fake store blocks on an Event or raises like an unreachable database; the
tests synchronise on events the fake sets (no wall-clock sleeps), and retry
delays are zero.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from skylift.controller.writer import StoreWriter
from skylift.model import Replica, ReplicaState

WAIT = 10.0  # seconds: only a deadline for threads to hand over, never waited out


class FakeStore:
    """Records writes in order; ``down`` makes every write raise, ``gate`` blocks them."""

    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []
        self.down = False
        self.fail_next = 0  # refuse this many writes, then answer
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a write has started (and may block)
        self.failures = 0

    def _write(self, *row: Any) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT), "test left the gate closed"
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            self.failures += 1
            raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        self.writes.append(row)

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        data: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> None:
        self._write("event", kind, ts, dict(data or {}), level)

    def upsert_replica(self, replica: Replica) -> None:
        self._write("upsert", replica.id, replica.state.value)

    def delete_replica(self, replica_id: str) -> None:
        self._write("delete", replica_id)

    def record_decision(
        self,
        service: str,
        desired: int,
        direction: str,
        reasons: Sequence[str],
        inputs: Mapping[str, Any] | None = None,
        *,
        ts: float | None = None,
    ) -> None:
        self._write("decision", service, desired, ts)

    def set_desired(self, service: str, n: int, *, configured: int | None = None) -> None:
        self._write("desired", service, n, configured)


class Ticks:
    """A wall clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def replica(rid: str, state: ReplicaState = ReplicaState.STARTING) -> Replica:
    return Replica(id=rid, service="web", host="127.0.0.1", port=9000, state=state)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def make(store: FakeStore, **kwargs: Any) -> StoreWriter:
    kwargs.setdefault("retry_first", 0.0)
    kwargs.setdefault("retry_max", 0.0)
    return StoreWriter(store, clock=Ticks(), registry=CollectorRegistry(), **kwargs)


def kinds(store: FakeStore) -> list[tuple[Any, ...]]:
    return [w[:2] for w in store.writes]


def test_writes_land_in_the_order_they_were_asked_for(store: FakeStore) -> None:
    writer = make(store)
    writer.add_event("a", "first")
    writer.upsert_replica(replica("web-1"))
    writer.record_decision("web", 3, "up", ["load"])
    writer.set_desired("web", 3)
    writer.delete_replica("web-0")
    writer.add_event("b", "last")
    assert writer.flush(WAIT)
    assert kinds(store) == [
        ("event", "a"),
        ("upsert", "web-1"),
        ("decision", "web"),
        ("desired", "web"),
        ("delete", "web-0"),
        ("event", "b"),
    ]
    writer.close()


def test_timestamps_are_taken_when_asked_not_when_written(store: FakeStore) -> None:
    store.gate.clear()
    writer = make(store)
    writer.add_event("early", "asked first")
    assert store.entered.wait(WAIT)
    writer.add_event("late", "asked second")
    store.gate.set()
    assert writer.flush(WAIT)
    early, late = store.writes
    assert early[2] < late[2]  # the ts each was asked at, in order
    writer.close()


def test_replica_records_coalesce_and_are_never_dropped(store: FakeStore) -> None:
    store.gate.clear()
    writer = make(store, max_pending=2)
    writer.add_event("blocker", "held in the store")  # in flight, blocked
    assert store.entered.wait(WAIT)
    writer.upsert_replica(replica("web-1", ReplicaState.STARTING))
    writer.upsert_replica(replica("web-2", ReplicaState.STARTING))
    for i in range(5):
        writer.add_event(f"e{i}", "filler")  # only the newest one survives (+1 in flight)
    writer.upsert_replica(replica("web-1", ReplicaState.READY))  # latest state wins
    writer.delete_replica("web-2")  # latest op for web-2 wins
    assert writer.pending == 1 + 2 + 1  # in flight + two keyed + one droppable
    store.gate.set()
    assert writer.flush(WAIT)
    assert store.writes == [
        ("event", "blocker", store.writes[0][2], {}, "info"),
        ("event", "e4", store.writes[1][2], {}, "info"),
        ("upsert", "web-1", "ready"),
        ("delete", "web-2"),
    ]
    assert writer.dropped == 4
    writer.close()


def test_a_store_outage_drops_oldest_counts_them_and_reports_once_when_back(
    store: FakeStore,
) -> None:
    registry = CollectorRegistry()
    store.fail_next = 3  # the store refuses three attempts, then answers
    store.gate.clear()
    writer = StoreWriter(
        store, clock=Ticks(), registry=registry, max_pending=3, retry_first=0.0, retry_max=0.0
    )
    writer.add_event("during-0", "in flight: fails, is kept and retried")
    assert store.entered.wait(WAIT)
    writer.upsert_replica(replica("web-1"))
    for i in range(1, 6):
        writer.add_event(f"during-{i}", "while the store is down")
    writer.set_desired("web", 4)
    assert writer.dropped == 3  # during-1..3: the oldest queued (during-0 counts in flight)
    store.gate.set()
    assert writer.flush(WAIT)
    assert store.failures == 3
    assert [w[1] for w in store.writes] == [
        "during-0",
        "store_available",  # once, as soon as the store answers
        "web-1",  # the replica record and the desired count are never dropped
        "during-4",
        "during-5",
        "web",
    ]
    report = store.writes[1]
    assert report[4] == "warning" and report[3]["dropped"] == 3
    assert registry.get_sample_value("skylift_store_writes_dropped_total") == 3
    assert registry.get_sample_value("skylift_store_unavailable") == 0
    assert writer.state()["failing_since"] is None
    writer.close()


def test_a_bad_write_is_counted_and_skipped_not_retried(store: FakeStore) -> None:
    registry = CollectorRegistry()
    writer = StoreWriter(store, clock=Ticks(), registry=registry, retry_first=0.0, retry_max=0.0)

    def bug() -> None:
        raise ValueError("unknown event level 'loud'")

    writer.submit("a bad write", bug)
    writer.add_event("after", "still written")
    assert writer.flush(WAIT)
    assert kinds(store) == [("event", "after")]
    assert registry.get_sample_value("skylift_store_writes_failed_total") == 1
    writer.close()


def test_close_writes_everything_queued(store: FakeStore) -> None:
    store.gate.clear()
    writer = make(store)
    for i in range(20):
        writer.add_event(f"e{i}", "queued")
    writer.upsert_replica(replica("web-1"))
    assert store.entered.wait(WAIT)
    store.gate.set()
    writer.close(timeout=WAIT)
    assert len(store.writes) == 21 and store.writes[-1][:2] == ("upsert", "web-1")
    writer.add_event("after-close", "refused, logged")
    assert len(store.writes) == 21


def test_close_gives_up_after_its_timeout_when_the_store_stays_down(store: FakeStore) -> None:
    store.down = True
    writer = make(store)
    writer.upsert_replica(replica("web-1"))
    writer.close(timeout=0.0)  # returns: the write is reported lost, nothing hangs
    assert store.writes == []


def test_a_hung_store_call_is_reported_in_flight(store: FakeStore) -> None:
    store.gate.clear()
    clock = [50.0]
    writer = StoreWriter(store, registry=CollectorRegistry(), monotonic=lambda: clock[0])
    writer.add_event("stuck", "the store never answers")
    assert store.entered.wait(WAIT)
    clock[0] += 42.0
    assert writer.stuck_for() == pytest.approx(42.0)
    state = writer.state()
    assert state["in_flight"] == "add_event stuck" and state["in_flight_seconds"] == 42.0
    store.gate.set()
    assert writer.flush(WAIT)
    assert writer.stuck_for() == 0.0
    writer.close()
