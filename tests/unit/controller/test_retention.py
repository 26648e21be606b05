"""Retention in the controller's loop: 10,000 ticks on a fake clock, a bounded store."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import func, select

from skylift.config import load_config
from skylift.controller.core import Controller
from skylift.store import Store
from skylift.store.tables import DecisionRow
from tests.unit.controller.fakes import Clock, RpsSource, started_controller

CONFIG = """
interval: 1s
metrics: {window: 5s, stale_after: 2}
retention: {events: 1000, decisions: 1h, interval: 30s}
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 2
    backend: {command: "app --port {port}"}
    autoscale:
      min: 1
      max: 6
      interval: 5s
      checks:
        - {kind: target, metric: rps, target: 10}
      behavior:
        down: {stabilization: 0s}
"""
TICKS = int(os.environ.get("TICKS", "10000"))
HOUR = 3600.0


def recorded(ctl: Controller) -> float:
    """Events the controller has recorded so far."""
    return sum(
        sample.value
        for metric in ctl.metrics.registry.collect()
        if metric.name == "skylift_events"
        for sample in metric.samples
        if sample.name == "skylift_events_total"
    )


def oldest_decision(store: Store) -> float:
    with store._session() as session:
        return float(session.scalar(select(func.min(DecisionRow.ts))) or 0.0)


async def test_ten_thousand_ticks_never_hold_more_than_retention(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    loaded = load_config(path, environ={})
    clock = Clock()
    store = Store.open(loaded.store_url, state_dir=loaded.state_dir, clock=clock)
    source = RpsSource(15.0)
    ctl = await started_controller(loaded, store, source, clock)
    assert ctl.collector is not None
    loop = ctl.loops["web"]
    retention = loaded.config.retention
    passes = written_max = 0
    for tick in range(TICKS):
        source.rps = 45.0 if (tick // 20) % 2 else 5.0  # scale 1 <-> 5 every 20 s: events
        await ctl.collector.collect(clock.now)
        ctl._autoscale(loop)
        await loop.tick()
        assert ctl.writer.flush(10)  # store writes are write-behind: the pass sees them
        before = recorded(ctl)
        pruned = await ctl.pruner.step(clock.now)
        assert ctl.writer.flush(10)
        during = recorded(ctl) - before  # retire tasks run while the pass is in its thread
        events = store.counts()["events"] if tick % 10 == 0 or pruned else 0
        written_max = max(written_max, events)
        if pruned is not None:  # right after a pass: exactly within retention
            passes += 1
            assert events - during <= retention.events
            assert oldest_decision(store) >= clock.now - HOUR
        clock.now += 1
    assert passes == TICKS // 30 + 1  # one pass per 30 s of the fake clock, the first at once
    decisions = store.decisions(limit=1_000_000)
    assert len(decisions) <= (HOUR + 30) / 5 + 1  # one per 5 s: an hour's worth, one period more
    assert decisions[0].ts >= clock.now - HOUR - 30
    # the run wrote far more than it kept: pruning did the bounding
    assert ctl.pruner.last is not None
    assert (
        ctl.metrics.registry.get_sample_value(
            "skylift_store_pruned_rows_total", {"table": "events"}
        )
        > retention.events
    )
    # between passes the store exceeds `events` by at most what 30 s of ticks write
    assert written_max <= retention.events + 30 * 10
    store.close()
