"""The forecaster and scaling events in the live controller: restore, pre-scale, persist."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from sqlalchemy.exc import OperationalError

from skylift.config import load_config
from skylift.controller.autoscaler import Autoscaler, LoadBuffer, expand
from skylift.controller.core import Controller
from skylift.controller.history import HistoryKeeper
from skylift.controller.recorder import ControllerMetrics, Recorder
from skylift.engine import Observations, ScalingPolicy, Series
from skylift.engine.forecast import HoltWinters
from skylift.engine.schedule import Event
from skylift.store import Store
from skylift.store.history import Bucket, History
from tests.unit.controller.fakes import Clock, RpsSource, started_controller

STEP = 10.0
SEASON = 600.0
PEAK = 60.0  # rps during the first 2 minutes of every season, 0 otherwise
TARGET = 10.0

POLICY = f"""
      policy: predictive
      capacity: {TARGET:g}
      min: 1
      max: 8
      interval: 5s
      forecast:
        step: {STEP:g}s
        seasons: ["{SEASON:g}s"]
        min_history: 30m
        startup: 30s
        gamma: 0.3
"""

CONFIG = f"""
interval: 1s
metrics: {{window: 10s, stale_after: 2}}
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 1
    backend: {{command: "app --port {{port}}"}}
    autoscale:{POLICY}
"""


def seasonal(peak_at: float, hours: float = 2.0) -> list[Bucket]:
    """History ending now whose next peak starts at ``peak_at`` (Unix seconds)."""
    end = math.floor(time.time() / STEP) * STEP
    n = int(hours * 3600 / STEP)
    out = []
    for i in range(n, 0, -1):
        start = end - i * STEP
        rate = PEAK if (start - peak_at) % SEASON < 120.0 else 0.0
        out.append(Bucket(start, STEP, rate * 10, 10))  # ten samples a bucket
    return out


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def store(config_path: Path) -> Iterator[Store]:
    loaded = load_config(config_path, environ={})
    with Store.open(loaded.store_url, state_dir=loaded.state_dir) as opened:
        yield opened


async def controller(config_path: Path, store: Store) -> tuple[Controller, Clock]:
    loaded = load_config(config_path, environ={})
    clock = Clock()
    return await started_controller(loaded, store, RpsSource(), clock), clock


async def decide_once(ctl: Controller, clock: Clock) -> None:
    assert ctl.collector is not None
    await ctl.collector.collect(clock.now)
    ctl._autoscale(ctl.loops["web"])
    clock.now += 5.0


async def test_restored_history_scales_up_before_the_peak(config_path: Path, store: Store) -> None:
    store.history.append("web", "rps", seasonal(peak_at=time.time() + 20.0))
    ctl, clock = await controller(config_path, store)
    await decide_once(ctl, clock)  # no load at all: only the forecast can ask for more
    desired = ctl.loops["web"].desired
    assert desired >= PEAK / TARGET
    explained = ctl.explain("web")
    assert any(c["stage"] == "forecast" for c in explained["clamps"])
    assert any(r.startswith("forecast: 0 -> ") and "rps up to" in r for r in explained["reasons"])
    forecast = explained["forecast"]
    # replayed: four of the longest season (2 h are stored)
    assert forecast["ready"] and forecast["history_s"] >= 4 * SEASON - 2 * STEP
    assert forecast["stats"]["forecasts"] > 20 and forecast["stats"]["mape_pct"] is not None
    assert ctl.writer.flush(10)  # store writes are write-behind: let them land
    restored = [e for e in store.events(service="web") if e.kind == "forecast_restored"]
    assert restored and restored[0].data["buckets"] in (239, 240)
    ctl._export(ctl.loops["web"], time.time())
    text = generate_latest(ctl.metrics.registry).decode()
    assert 'skylift_forecast_error_ratio{kind="mape",service="web"}' in text
    assert f'skylift_forecast_replicas{{service="web"}} {float(forecast["replicas"])}' in text


async def test_no_early_scale_up_when_the_peak_is_far(config_path: Path, store: Store) -> None:
    store.history.append("web", "rps", seasonal(peak_at=time.time() + 300.0))
    ctl, clock = await controller(config_path, store)
    await decide_once(ctl, clock)
    # the headroom covers the model's own errors around past peak edges, not the peak
    desired = ctl.loops["web"].desired
    assert desired <= PEAK / TARGET / 2
    assert ctl.explain("web")["forecast"]["replicas"] == desired


async def test_without_history_the_forecast_says_reactive_only(
    config_path: Path, store: Store
) -> None:
    ctl, clock = await controller(config_path, store)
    await decide_once(ctl, clock)
    forecast = ctl.explain("web")["forecast"]
    assert forecast["ready"] is False and "reactive only" in forecast["note"]
    assert forecast["stats"]["mape_pct"] is None  # NaN would break strict JSON


async def test_api_events_raise_the_floor_and_survive_a_restart(
    config_path: Path, store: Store
) -> None:
    ctl, clock = await controller(config_path, store)
    await decide_once(ctl, clock)
    assert ctl.loops["web"].desired == 1
    now = time.time()
    ctl.history.add_event("web", Event(name="launch", start=now - 1, end=now + 600, min=4))
    await decide_once(ctl, clock)  # adding an event makes the next tick decide
    assert ctl.loops["web"].desired == 4
    clamps = ctl.explain("web")["clamps"]
    assert any(c["stage"] == "min" and "launch" in c["reason"] for c in clamps)
    assert [e["source"] for e in ctl.history.events("web")] == ["api"]

    again, clock2 = await controller(config_path, store)  # a restarted controller
    await decide_once(again, clock2)
    assert again.explain("web")["calendar"]["active"] == ["launch"]
    assert again.loops["web"].desired == 4
    assert again.history.remove_event("web", "launch") is True
    assert again.history.remove_event("web", "launch") is False
    clock2.now += 10  # past the 5 s interval... and removal re-arms the decision anyway
    await decide_once(again, clock2)
    assert again.loops["web"].desired == 1


def test_load_buffer_buckets_by_wall_time_and_hands_over_once() -> None:
    buffer = LoadBuffer(step=10.0)
    offset = 1_000_000.0  # wall - monotonic
    times = [float(t) for t in range(1, 26)]  # 1 s samples at monotonic 1..25
    series = Series(times, [2.0] * 25)
    buffer.add(series, now=12.0, wall=12.0 + offset)
    closed = buffer.take()
    assert [(b.start, b.samples, b.total) for b in closed] == [(offset, 10, 20.0)]
    buffer.add(series, now=25.0, wall=25.0 + offset)  # the same series, now longer
    assert [(b.start, b.samples) for b in buffer.take()] == [(offset + 10.0, 10)]
    assert [(b.start, b.samples) for b in buffer.take(everything=True)] == [(offset + 20.0, 5)]
    assert buffer.take(everything=True) == []


def test_expand_spreads_coarse_buckets_over_steps() -> None:
    times, values = expand([Bucket(0.0, 30.0, 60.0, 6), Bucket(30.0, 10.0, 7.0, 1)], 10.0)
    assert times == pytest.approx([0.0, 10.0, 20.0, 30.0], abs=0.01)
    assert values == [10.0, 10.0, 10.0, 7.0]


def test_persisted_history_restores_the_same_forecaster(store: Store) -> None:
    """What one autoscaler learned live, another learns from the store after a restart."""
    policy = ScalingPolicy.model_validate(
        {
            "policy": "predictive",
            "capacity": TARGET,
            "interval": "5s",
            "forecast": {"step": "10s", "seasons": ["600s"], "min_history": "10m"},
        }
    )
    live = Autoscaler("web", policy, startup=30.0)
    wall0 = math.floor(time.time() / 600.0) * 600.0 - 7200.0
    times: list[float] = []
    values: list[float] = []
    for k in range(0, 3600, 5):  # an hour of 1-per-5s samples, monotonic from 0
        times.append(float(k))
        values.append(PEAK if k % 600 < 120 else 3.0)
        if k % 60 == 0 and k:
            obs = Observations(window=10.0, rps=Series(times, values))
            live.evaluate(obs, 1, 1, float(k), wall=wall0 + k)
            store.history.append("web", "rps", live.take_history())
    store.history.append("web", "rps", live.take_history(everything=True))
    restored = Autoscaler("web", policy, startup=30.0)
    restored.restore(store.history.load("web", "rps"))
    assert live.forecaster is not None and restored.forecaster is not None
    assert restored.forecaster.history == live.forecaster.history
    restored_model, live_model = restored.forecaster.model, live.forecaster.model
    assert isinstance(restored_model, HoltWinters) and isinstance(live_model, HoltWinters)
    assert restored_model.level == pytest.approx(live_model.level)
    later = wall0 + 3600.0 + 400.0
    a = live.forecaster.advance(None, later, later)
    b = restored.forecaster.advance(None, later, later)
    assert (a.replicas, round(a.point, 6)) == (b.replicas, round(b.point, 6))


def test_keeper_writes_in_batches_and_keeps_buckets_through_a_store_outage(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = ScalingPolicy.model_validate(
        {"policy": "predictive", "capacity": TARGET, "forecast": {"step": "10s"}}
    )
    autoscaler = Autoscaler("web", policy)
    keeper = HistoryKeeper(store, {"web": autoscaler}, Recorder(store, ControllerMetrics()))
    wall0 = 1_800_000_000.0
    keeper.restore(wall0)
    times = [float(t) for t in range(1, 36)]
    obs = Observations(window=10.0, rps=Series(times, [4.0] * 35))
    autoscaler.evaluate(obs, 1, 1, 35.0, wall=wall0 + 35.0)  # closes 3 buckets, one open
    keeper.flush(wall0 + 35.0)
    assert store.history.load("web", "rps") == []  # not a write per tick

    def outage(*_: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(History, "append", outage)
    keeper.flush(wall0 + 61.0)
    monkeypatch.undo()
    assert store.history.load("web", "rps") == []
    keeper.flush(wall0 + 62.0, everything=True)  # e.g. on shutdown: the open bucket too
    stored = store.history.load("web", "rps")
    assert [(b.start - wall0, b.samples, b.mean) for b in stored] == [
        (0.0, 10, 4.0),
        (10.0, 10, 4.0),
        (20.0, 10, 4.0),
        (30.0, 5, 4.0),
    ]


def test_live_samples_after_a_quick_restart_join_the_stored_partial_bucket() -> None:
    policy = ScalingPolicy.model_validate(
        {"policy": "predictive", "capacity": TARGET, "forecast": {"step": "60s"}}
    )
    autoscaler = Autoscaler("web", policy)
    wall0 = 1_800_000_000.0  # a whole minute
    autoscaler.restore([Bucket(wall0, 60.0, 30.0, 10)])  # written at shutdown, 10 s in
    # restarted 20 s into the same minute: 30 live samples up to wall0 + 50
    obs = Observations(window=10.0, rps=Series([float(t) for t in range(1, 31)], [9.0] * 30))
    autoscaler.evaluate(obs, 1, 1, 30.0, wall=wall0 + 50.0)
    assert autoscaler.forecaster is not None
    assert autoscaler.forecaster._n == 31  # the stored partial (as one sample) + 30 live
    # and only the live samples go back to the store, to merge with the stored row
    assert [(b.start, b.samples) for b in autoscaler.take_history(everything=True)] == [(wall0, 30)]
