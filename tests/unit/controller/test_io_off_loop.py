"""No store write runs on the event loop's thread: ticks, autoscaling, `scale` and events
all hand their writes to the writer (audit finding: they wrote to SQLite/PostgreSQL on
the loop, so a slow store froze every service, the API and /livez)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skylift.config import load_config
from skylift.store import Store
from tests.unit.controller.fakes import Clock, RpsSource, started_controller
from tests.unit.controller.test_autoscaling import CONFIG

WRITES = ("add_event", "upsert_replica", "delete_replica", "record_decision", "set_desired")


def watch(store: Store, on_loop: list[str]) -> None:
    """Wrap the store's writes: note any made from the thread running the event loop."""
    loop_thread = threading.get_ident()
    for name in WRITES:
        original: Callable[..., Any] = getattr(store, name)

        @functools.wraps(original)
        def wrapped(
            *args: Any, _name: str = name, _f: Callable[..., Any] = original, **kw: Any
        ) -> Any:
            if threading.get_ident() == loop_thread:
                on_loop.append(_name)
            return _f(*args, **kw)

        setattr(store, name, wrapped)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    (tmp_path / "skylift.yaml").write_text(CONFIG)
    loaded = load_config(tmp_path / "skylift.yaml", environ={})
    return Store.open(loaded.store_url, state_dir=loaded.state_dir)


async def test_ticks_decisions_scale_and_events_never_write_on_the_loop(
    tmp_path: Path, store: Store
) -> None:
    loaded = load_config(tmp_path / "skylift.yaml", environ={})
    on_loop: list[str] = []
    watch(store, on_loop)
    source, clock = RpsSource(45.0), Clock()
    ctl = await started_controller(loaded, store, source, clock)
    assert ctl.collector is not None
    loop = ctl.loops["web"]
    for _ in range(12):  # scale up on load: replicas started, records, decisions, events
        await ctl.collector.collect(clock.now)
        ctl._autoscale(loop)
        await loop.tick()
        clock.now += 1
    ctl.scale("web", 2)
    source.rps = 5.0
    for _ in range(12):  # scale in: drains, stops, deletes
        await ctl.collector.collect(clock.now)
        ctl._autoscale(loop)
        await loop.tick()
        clock.now += 1
    await loop.close()
    assert await ctl.flush_writes()
    assert on_loop == []
    kinds = {e.kind for e in store.events(limit=1000)}
    assert {"replica_started", "autoscaled", "scaled"} <= kinds
    assert store.decisions(service="web")
    assert store.desired("web") is not None
    await ctl.close()
    store.close()
