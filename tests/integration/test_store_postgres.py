"""The store on a real PostgreSQL: migrations, CRUD, the advisory controller lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from skylift.model import Replica, ReplicaState
from skylift.store import ControllerAlreadyRunning, ControllerLock, Store
from skylift.store import migrate as migrations
from tests.fixtures.schema import migrated_schema

pytestmark = pytest.mark.integration

# Until tests/conftest.py registers the plugin (pytest_plugins = ["tests.fixtures.postgres"]);
# delete these two lines then.

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from skylift.store import Store
    store = Store.open(sys.argv[1], state_dir=Path(sys.argv[2]))
    lock = store.acquire_controller_lock("other-controller")
    print("locked", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def store(postgres_url: str, tmp_path: Path) -> Iterator[Store]:
    with Store.open(postgres_url, state_dir=tmp_path) as opened:
        yield opened


def test_migrations_reach_head_and_match_the_models(store: Store) -> None:
    assert store.dialect == "postgresql"
    assert migrations.current_revisions(store._engine) == migrations.head_revisions()
    with store._engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), migrated_schema()) == []


def test_plain_postgresql_url_uses_psycopg3(postgres_url: str, tmp_path: Path) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with Store.open(plain, state_dir=tmp_path) as opened:
        assert opened.url.startswith("postgresql+psycopg://")


def test_crud(store: Store) -> None:
    replica = Replica("web-1", "web", "127.0.0.1", 20001, pid=7, started_at=1.5, handle={"a": "b"})
    store.upsert_replica(replica)
    replica.state = ReplicaState.READY
    store.upsert_replica(replica)
    assert store.replicas("web") == [replica]
    assert store.delete_replica("web-1") and store.replicas() == []

    first = store.add_event("start", "web-1 started", service="web", data={"port": 20001})
    store.add_event("crash", "web-1 exited", service="web", level="error")
    assert store.events(after_id=first.id)[0].level == "error"
    assert store.events(service="web", limit=1)[0].kind == "crash"

    store.set_desired("web", 5)
    store.set_crash_state("web", {"failures": 1})
    assert store.desired("web") == 5
    decision = store.record_decision("web", 5, "up", ["rps above target"], {"rps": 120.0})
    assert store.decisions("web") == [decision]


def test_retention_prunes_on_postgresql(store: Store) -> None:
    for n in range(30):
        store.add_event("tick", f"event {n}")
        store.record_decision("web", 1, "hold", ["steady"])
    pruned = store.prune(events=10, decisions=0.0, history=3600.0)
    assert pruned.events == 20 and pruned.decisions == 30
    assert store.events(limit=100)[0].message == "event 20"
    assert store.counts()["events"] == 10


def test_reopen_keeps_data(postgres_url: str, tmp_path: Path) -> None:
    with Store.open(postgres_url, state_dir=tmp_path) as first:
        first.set_desired("web", 2)
    with Store.open(postgres_url, state_dir=tmp_path) as second:
        assert second.desired("web") == 2


def test_advisory_lock_is_exclusive_and_released(store: Store, postgres_url: str) -> None:
    lock = store.acquire_controller_lock("first")
    with Store.open(postgres_url, state_dir=Path("/nonexistent")) as other:
        with pytest.raises(ControllerAlreadyRunning) as err:
            other.acquire_controller_lock("second")
        assert f"pid {os.getpid()}" in str(err.value) and "'first'" in str(err.value)
        lock.check()
        lock.release()
        with other.acquire_controller_lock("second") as second:
            assert second.held


def test_advisory_lock_freed_when_holder_process_is_killed(
    store: Store, postgres_url: str, tmp_path: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, postgres_url, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ControllerAlreadyRunning) as err:
            store.acquire_controller_lock("me")
        assert err.value.holder["pid"] == holder.pid
        holder.kill()
        holder.wait(timeout=10)
        # the server notices the dead connection; poll until the lock is free
        _acquire_within(store, 10.0).release()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()


def _acquire_within(store: Store, within: float) -> ControllerLock:
    deadline = time.monotonic() + within
    while True:
        try:
            return store.acquire_controller_lock("me")
        except ControllerAlreadyRunning:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
