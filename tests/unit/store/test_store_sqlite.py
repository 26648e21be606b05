"""The store on SQLite: schema, CRUD, event paging, masking of secrets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from skylift.model import Replica, ReplicaState
from skylift.store import Store, masked
from skylift.store import migrate as migrations
from skylift.store.history import Bucket
from tests.fixtures.schema import migrated_schema


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    with Store.open(state_dir=tmp_path / "state", clock=clock) as opened:
        yield opened


def replica(rid: str = "web-1", service: str = "web", port: int = 20001) -> Replica:
    return Replica(
        rid, service, "127.0.0.1", port, pid=42, started_at=12.5, handle={"pid": "42", "x": "y"}
    )


def test_open_creates_sqlite_in_state_dir_at_head_in_wal_mode(store: Store, tmp_path: Path) -> None:
    assert (tmp_path / "state" / "skylift.db").is_file()
    assert store.dialect == "sqlite"
    engine = store._engine
    assert migrations.current_revisions(engine) == migrations.head_revisions()
    assert set(inspect(engine).get_table_names()) >= {"replicas", "events", "services", "decisions"}
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_models_and_migrations_agree(store: Store) -> None:
    with store._engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), migrated_schema())
    assert diff == [], "tables.py changed without a migration: add one in migrations/versions"


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    with Store.open(state_dir=tmp_path) as first:
        first.upsert_replica(replica())
    with Store.open(state_dir=tmp_path) as second:
        assert [r.id for r in second.replicas()] == ["web-1"]


def test_replica_round_trip_update_and_delete(store: Store, clock: FakeClock) -> None:
    store.upsert_replica(replica())
    store.upsert_replica(replica("api-1", "api", 20002))
    assert store.replicas("web") == [replica()]
    assert [r.id for r in store.replicas()] == ["api-1", "web-1"]

    clock.now += 5
    updated = replica()
    updated.state = ReplicaState.READY
    updated.handle = {"pid": "42"}
    store.upsert_replica(updated)
    assert store.replicas("web") == [updated]

    assert store.delete_replica("web-1") is True
    assert store.delete_replica("web-1") is False
    assert store.replicas("web") == []


def test_events_newest_by_default_and_forward_paging(store: Store, clock: FakeClock) -> None:
    for i in range(5):
        clock.now = 1000.0 + i
        store.add_event("tick", f"event {i}", service="web" if i % 2 == 0 else "api", data={"i": i})
    newest = store.events(limit=2)
    assert [e.message for e in newest] == ["event 3", "event 4"]
    assert [e.message for e in store.events(service="web")] == ["event 0", "event 2", "event 4"]
    assert [e.message for e in store.events(since=1003.0)] == ["event 3", "event 4"]
    first_two = store.events(after_id=0, limit=2)
    assert [e.message for e in first_two] == ["event 0", "event 1"]
    rest = store.events(after_id=first_two[-1].id)
    assert [e.message for e in rest] == ["event 2", "event 3", "event 4"]
    assert rest[0].data == {"i": 2} and rest[0].ts == 1002.0 and rest[0].level == "info"


def test_add_event_returns_stored_event_and_rejects_unknown_level(store: Store) -> None:
    event = store.add_event("crash", "web-1 exited 3", service="web", level="error")
    assert event.id >= 1 and store.events() == [event]
    with pytest.raises(ValueError, match="unknown event level 'fatal'"):
        store.add_event("crash", "x", level="fatal")


def test_prune_events(store: Store, clock: FakeClock) -> None:
    store.add_event("old", "old")
    clock.now += 100
    store.add_event("new", "new")
    assert store.prune_events(before=clock.now - 50) == 1
    assert [e.kind for e in store.events()] == ["new"]


def test_desired_and_crash_state(store: Store) -> None:
    assert store.desired("web") is None
    assert store.service_state("web") is None
    store.set_desired("web", 3)
    store.set_crash_state("web", {"failures": 2, "next_start": 1010.0})
    store.set_desired("web", 4)
    assert store.desired("web") == 4
    state = store.service_state("web")
    assert state is not None and state.crash_state == {"failures": 2, "next_start": 1010.0}
    with pytest.raises(ValueError, match=">= 0"):
        store.set_desired("web", -1)


def test_decisions_newest_in_time_order(store: Store, clock: FakeClock) -> None:
    for n in (2, 3, 4):
        clock.now += 1
        store.record_decision("web", n, "up", [f"cpu above target ({n})"], {"cpu": 0.9})
    store.record_decision("api", 1, "hold", [])
    decisions = store.decisions("web", limit=2)
    assert [d.desired for d in decisions] == [3, 4]
    assert decisions[0].reasons == ["cpu above target (3)"] and decisions[0].inputs == {"cpu": 0.9}


def test_url_password_is_masked() -> None:
    shown = masked("postgresql+psycopg://skylift:s3cret@db.example:5432/skylift")
    assert "s3cret" not in shown and "***" in shown and "db.example" in shown


def test_unsupported_or_invalid_url_never_echoes_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as unsupported:
        Store.open("mysql://u:s3cret@host/db", state_dir=tmp_path)
    assert "s3cret" not in str(unsupported.value) and "unsupported store" in str(unsupported.value)
    with pytest.raises(ValueError) as invalid:
        Store.open("not a url s3cret", state_dir=tmp_path)
    assert "s3cret" not in str(invalid.value)


def test_configured_count_is_kept_beside_desired(store: Store) -> None:
    assert store.configured_replicas("web") is None
    store.set_desired("web", 2, configured=2)
    store.set_desired("web", 5)  # `skylift scale`: the configured count stays
    assert store.desired("web") == 5 and store.configured_replicas("web") == 2


def test_open_by_url_alone_puts_the_lock_beside_the_database(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'db' / 'skylift.db'}") as opened:
        lease = opened.acquire_controller_lock("me")
        assert list((tmp_path / "db").glob("controller-*.lock"))  # the holder's personal lock
        lease.release()
    assert not list((tmp_path / "db").glob("controller-*.lock"))  # removed on release


def test_retention_keeps_the_newest_events_and_recent_decisions(tmp_path: Path) -> None:
    now = [1000.0]
    with Store.open(state_dir=tmp_path, clock=lambda: now[0]) as store:
        for n in range(50):
            now[0] = 1000.0 + n * 60
            store.add_event("tick", f"event {n}")
            store.record_decision("web", 1, "hold", ["steady"])
        store.history.append(
            "web", "rps", [Bucket(0.0, 60.0, 1.0, 1), Bucket(3000.0, 60.0, 1.0, 1)]
        )
        assert store.prune_events_beyond(100) == 0  # fewer than kept: nothing goes
        pruned = store.prune(events=10, decisions=600.0, history=1000.0)
        assert (pruned.events, pruned.decisions, pruned.history) == (40, 39, 1)
        assert [e.message for e in store.events(limit=100)] == [f"event {n}" for n in range(40, 50)]
        assert min(d.ts for d in store.decisions(limit=100)) >= now[0] - 600
        assert store.counts() == {"events": 10, "decisions": 11, "history": 1}
