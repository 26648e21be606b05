"""Scheduled, event-based and predictive scaling on a live controller (`skylift up`).

No test sends load: every scale-up here must come from the calendar or the
forecast, ahead of (or without) the traffic a reactive policy would wait for.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from skylift.store import Store
from skylift.store.history import Bucket
from tests.e2e.harness import Deployment, wait_for, web_service

Deploy = Callable[..., Deployment]

REACTIVE: dict[str, Any] = {
    "min": 1,
    "max": 4,
    "interval": "1s",
    "checks": [{"kind": "target", "metric": "rps", "target": 30, "tolerance": "10%"}],
    "behavior": {"up": {"stabilization": "0s"}, "down": {"stabilization": "0s"}},
}


def autoscaled(deploy: Deploy, policy: dict[str, Any]) -> Deployment:
    d = deploy({"web": web_service(replicas=1)})
    d.services["web"]["autoscale"] = policy
    d.settings = {"interval": "500ms", "metrics": {"window": "4s"}}
    d.write()
    return d


def explain(d: Deployment) -> dict[str, Any]:
    return json.loads(d.cli("explain", "web", "-o", "json").stdout)  # type: ignore[no-any-return]


def test_config_event_raises_replicas_before_any_load_then_returns(deploy: Deploy) -> None:
    start = time.time() + 20.0  # `up` returns well before: the count must wait for it
    end = start + 10.0
    event = {"name": "launch", "start": start, "end": end, "min": 3}
    d = autoscaled(deploy, {**REACTIVE, "events": [event]})
    d.up()
    assert d.service()["desired"] == 1
    wait_for(lambda: d.service()["ready"] == 3, 40, "3 replicas ready for the event")
    assert time.time() >= start - 1.0, "scaled up before the event began"
    assert "launch" in explain(d)["calendar"]["active"]
    wait_for(lambda: d.service()["desired"] == 1, 30, "back to 1 replica after the event")
    assert time.time() >= end - 1.0, "scaled down before the event ended"
    ups = [e for e in d.events("web") if e["kind"] == "autoscaled"]
    assert any("min is 3 (launch)" in r for e in ups for r in e["data"]["reasons"])


def test_cron_schedule_raises_the_floor_for_its_window_only(deploy: Deploy) -> None:
    # The window opens at the first whole UTC minute at least 20 s away (so `up` is
    # done well before it) and lasts 20 s; the cron names that minute exactly.
    now = time.time()
    start = (math.floor(now / 60.0) + 1) * 60.0
    if start - now < 20.0:
        start += 60.0
    fire = datetime.fromtimestamp(start, UTC)
    rush = {
        "name": "rush",
        "cron": f"{fire.minute} {fire.hour} * * *",
        "duration": "20s",
        "timezone": "UTC",
        "min": 3,
    }
    d = autoscaled(deploy, {**REACTIVE, "schedules": [rush]})
    d.up()
    assert d.service()["desired"] == 1
    wait_for(lambda: d.service()["desired"] == 3, 90, "the schedule's floor of 3")
    assert time.time() >= start - 1.0, "scaled up before the window opened"
    wait_for(lambda: d.service()["ready"] == 3, 20, "3 replicas ready in the window")
    wait_for(lambda: d.service()["desired"] == 1, 40, "back to 1 replica after the window")
    assert time.time() >= start + 20.0 - 1.0, "scaled down before the window closed"
    ups = [e for e in d.events("web") if e["kind"] == "autoscaled"]
    assert any("min is 3 (rush)" in r for e in ups for r in e["data"]["reasons"])


def test_event_added_through_the_cli_raises_the_floor_and_survives_a_restart(
    deploy: Deploy,
) -> None:
    d = autoscaled(deploy, REACTIVE)
    d.up()
    assert d.service()["desired"] == 1
    d.cli("event", "add", "web", "--name", "surge", "--min", "3", "--duration", "10m")
    wait_for(lambda: d.service()["ready"] == 3, 30, "3 replicas ready for the added event")
    listed = json.loads(d.cli("event", "list", "web", "-o", "json").stdout)["events"]
    assert [(e["name"], e["source"], e["min"]) for e in listed] == [("surge", "api", 3)]

    # A restarted controller reads the event back from the store and keeps the floor.
    pid = d.controller_pid()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), 20, "the controller to stop")
    d.up()
    assert explain(d)["calendar"]["active"] == ["surge"]
    assert d.service()["desired"] == 3

    d.cli("event", "remove", "web", "surge")
    wait_for(lambda: d.service()["desired"] == 1, 30, "back to 1 replica once removed")
    assert "surge" not in d.cli("event", "list", "web").stdout
    missing = d.cli("event", "remove", "web", "surge", check=False)
    assert missing.returncode == 1 and "no API event named 'surge'" in missing.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


STEP = 5.0
SEASON = 600.0
PEAK_RPS = 50.0
CAPACITY = 10.0


def seed_history(d: Deployment, peak_at: float, hours: float = 1.0) -> None:
    """Seasonal history at real wall-clock times: 2 minutes of peak every 10 minutes,
    the next one starting at ``peak_at``; nothing in between."""
    end = math.floor(time.time() / STEP) * STEP
    buckets = []
    for i in range(int(hours * 3600 / STEP), 0, -1):
        start = end - i * STEP
        rate = PEAK_RPS if (start - peak_at) % SEASON < 120.0 else 0.0
        buckets.append(Bucket(start, STEP, rate * 5, 5))
    with Store.open(f"sqlite:///{d.state_dir / 'skylift.db'}", state_dir=d.state_dir) as store:
        store.history.append("web", "rps", buckets)


def test_forecast_from_stored_history_scales_up_before_the_load(deploy: Deploy) -> None:
    policy = {
        "policy": "predictive",
        "capacity": CAPACITY,
        "min": 1,
        "max": 6,
        "interval": "1s",
        "forecast": {
            "step": f"{STEP:g}s",
            "seasons": [f"{SEASON:g}s"],
            "min_history": "30m",
            "startup": "20s",  # lead = startup + interval = 21 s
            "gamma": 0.3,
        },
    }
    d = autoscaled(deploy, policy)
    peak_at = time.time() + 50.0
    seed_history(d, peak_at)
    d.up()
    first = d.service()["desired"]
    assert first < PEAK_RPS / CAPACITY, "the forecast asked for the peak long before it"
    restored = [e for e in d.events("web") if e["kind"] == "forecast_restored"]
    assert restored and restored[0]["data"]["history_s"] >= 1800

    wait_for(
        lambda: d.service()["desired"] >= PEAK_RPS / CAPACITY,
        max(1.0, peak_at - time.time()),
        "a scale-up ahead of the forecast peak",
    )
    assert time.time() < peak_at, "scaled up only once the peak was due"
    why = explain(d)
    assert why["inputs"]["rps"] == 0.0  # no load has arrived: only the forecast speaks
    forecast = [c for c in why["clamps"] if c["stage"] == "forecast"]
    assert forecast and forecast[0]["after"] >= PEAK_RPS / CAPACITY
    assert any(r.startswith("forecast: ") and "rps up to" in r for r in why["reasons"])
    assert why["forecast"]["ready"] and why["forecast"]["stats"]["forecasts"] > 0
    table = d.cli("explain", "web").stdout
    assert "clamp  forecast:" in table and "MAPE" in table

    shown = json.loads(d.cli("forecast", "web", "-o", "json", "--recent", "5m").stdout)
    assert shown["ready"] and shown["rows"]
