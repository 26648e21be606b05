"""Finding 9 in the controller: a metric source raising for one service fails only that
(source, service); the other service keeps its samples, its decisions and its scaling."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import structlog

from skylift.backends.memory import MemoryBackend
from skylift.config import load_config
from skylift.controller.core import Controller
from skylift.metrics import Collector
from skylift.store import Store
from tests.polling import wait_for_async
from tests.unit.controller.fakes import Clock, FakeBalancer, healthy

SERVICE = """
  {name}:
    frontend: 127.0.0.1:{port}
    replicas: 2
    backend: {{command: "app --port {{port}}", ports: {{start: {start}, end: {end}}}}}
    autoscale:
      min: 2
      max: 6
      interval: 1s
      checks:
        - {{kind: target, metric: rps, target: 10}}
      behavior:
        down: {{stabilization: 0s}}
"""
CONFIG = (
    "interval: 1s\nmetrics: {window: 10s, stale_after: 2}\nservices:"
    + SERVICE.format(name="web", port=9080, start=21000, end=21099)
    + SERVICE.format(name="api", port=9081, start=21100, end=21199)
)


class BuggyForWeb:
    """rps for every service, except that it raises a bug (not a SourceError) for web."""

    name = "fake-rps"

    def provides(self, service: str) -> frozenset[str]:
        return frozenset({"rps"})

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        if service == "web":
            raise ZeroDivisionError("division by zero")
        return {"rps": 45.0}


async def controller(tmp_path: Path, clock: Clock) -> Controller:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    loaded = load_config(path, environ={})
    store = Store.open(loaded.store_url, state_dir=loaded.state_dir)
    collector = Collector(["web", "api"], [BuggyForWeb()], interval=1.0, window=10.0)
    ctl = Controller(
        loaded,
        store,
        FakeBalancer(),
        {"web": MemoryBackend("web"), "api": MemoryBackend("api")},
        clock=clock,
        probe=healthy,
        collector=collector,
    )
    await ctl.start()
    return ctl


async def test_a_buggy_source_for_one_service_leaves_the_other_scaling(tmp_path: Path) -> None:
    clock = Clock()
    ctl = await controller(tmp_path, clock)
    assert ctl.collector is not None
    for _ in range(6):  # the fake clock is the only time: no sleep
        await ctl.collector.collect(clock.now)
        for name in ("web", "api"):
            ctl._autoscale(ctl.loops[name])
        clock.now += 1
    api = ctl.collector.observations("api", clock.now - 1).rps
    assert api is not None and list(api.times) == [100.0 + t for t in range(6)]  # on time
    assert ctl.loops["api"].desired == 5  # 45 rps at 10 per replica
    assert ctl.loops["web"].desired == 2  # rps MISSING: holds
    assert ctl.explain("web")["failing_sources"] == [{"source": "fake-rps", "metrics": ["rps"]}]
    assert ctl.explain("api")["failing_sources"] == []


async def test_the_collector_task_records_the_pair_and_logs_the_bug(tmp_path: Path) -> None:
    ctl = await controller(tmp_path, Clock())
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(ctl._run_collector(stop))
        try:
            await wait_for_async(
                lambda: any(e.kind == "metrics_source_failing" for e in ctl.store.events()),
                5,
                "the failing event",
            )
        finally:
            stop.set()
            await task
    events = ctl.store.events()
    (failing,) = [e for e in events if e.kind == "metrics_source_failing"]
    assert failing.service == "web" and failing.data["source"] == "fake-rps"
    assert "ZeroDivisionError" in failing.message
    assert not [e for e in events if e.kind == "collector_error"]  # no back-off for all
    (bug,) = [x for x in logs if x["event"] == "metric_source_bug"]
    assert (bug["source"], bug["service"]) == ("fake-rps", "web")
    assert isinstance(bug["exc_info"], ZeroDivisionError)
