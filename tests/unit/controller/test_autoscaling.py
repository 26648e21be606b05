"""The engine in the controller's loop: decisions move `desired`, missing data holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylift.backends.memory import MemoryBackend
from skylift.config import load_config
from skylift.controller.core import Controller
from skylift.store import Store
from tests.unit.controller.fakes import Clock, FakeBalancer, RpsSource, healthy, started_controller

CONFIG = """
interval: 1s
metrics: {window: 10s, stale_after: 2}
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 2
    backend: {command: "app --port {port}"}
    autoscale:
      min: 2
      max: 6
      interval: 5s
      checks:
        - {kind: target, metric: rps, target: 10}
      behavior:
        down: {stabilization: 0s}
"""


@pytest.fixture
async def setup(tmp_path: Path) -> tuple[Controller, RpsSource, Clock]:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    loaded = load_config(path, environ={})
    store = Store.open(loaded.store_url, state_dir=loaded.state_dir)
    source, clock = RpsSource(15.0), Clock()
    return await started_controller(loaded, store, source, clock), source, clock


async def run(ctl: Controller, clock: Clock, seconds: int) -> None:
    assert ctl.collector is not None
    loop = ctl.loops["web"]
    for _ in range(seconds):
        await ctl.collector.collect(clock.now)
        for change in ctl.collector.transitions():
            ctl.recorder.event(f"metrics_source_{change.kind}", change.message, service="web")
        ctl._autoscale(loop)
        await loop.tick()
        clock.now += 1
    assert ctl.writer.flush(10)  # store writes are write-behind: let them land


async def test_load_drives_desired_and_decisions_are_recorded(setup: tuple) -> None:
    ctl, source, clock = setup
    source.rps = 45.0  # 10 rps per replica -> 5 replicas
    await run(ctl, clock, 12)
    assert ctl.loops["web"].desired == 5
    decisions = ctl.store.decisions(service="web")
    assert decisions and decisions[-1].desired == 5
    assert decisions[-1].inputs["rps"] == 45.0
    assert any("scale up" in r for d in decisions for r in d.reasons)
    explained = ctl.explain("web")
    assert explained["desired"] == 5
    assert explained["checks"][0]["recommendation"] == 5
    source.rps = 100.0
    await run(ctl, clock, 12)
    assert ctl.loops["web"].desired == 6  # max holds, and says so
    assert any(c["stage"] == "max" for c in ctl.explain("web")["clamps"])


async def test_missing_metrics_hold_and_recover(setup: tuple) -> None:
    ctl, source, clock = setup
    source.rps = 45.0
    await run(ctl, clock, 12)
    assert ctl.loops["web"].desired == 5
    source.rps = None  # the source dies while load is gone
    await run(ctl, clock, 20)
    assert ctl.loops["web"].desired == 5  # never scales down on missing data
    events = [e.kind for e in ctl.store.events(service="web", limit=500)]
    assert events.count("metrics_source_failing") == 1
    source.rps = 5.0
    await run(ctl, clock, 12)
    assert "metrics_source_recovered" in [e.kind for e in ctl.store.events(service="web")]
    assert ctl.loops["web"].desired == 2  # back to normal scaling, down to min


async def test_manual_scale_is_clamped_into_policy_on_restart(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG.replace("replicas: 2", "replicas: 9"))
    loaded = load_config(path, environ={})
    store = Store.open(loaded.store_url, state_dir=loaded.state_dir)
    ctl = Controller(loaded, store, FakeBalancer(), {"web": MemoryBackend("web")}, probe=healthy)
    await ctl.start()
    assert ctl.loops["web"].desired == 6
