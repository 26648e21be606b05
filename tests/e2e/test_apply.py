"""`skylift apply`, `scale` clamps and `autoscale pause` through the real CLI, HAProxy and
processes: what an operator does to a running controller."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil

from skylift.lb.runtime import send_command
from tests.e2e.harness import Deployment, wait_for, web_service
from tests.ports import free_port

Deploy = Callable[..., Deployment]


class SteadyLoad:
    """A few requests a second to one frontend from a thread; counts every failure."""

    def __init__(self, url: str, per_second: float = 20.0) -> None:
        self.url = url
        self.every = 1.0 / per_second
        self.sent = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not self._stop.is_set():
                self.sent += 1
                try:
                    status = client.get(self.url).status_code
                    if status != 200:
                        self.failed.append(f"HTTP {status}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                self._stop.wait(self.every)


def haproxy(d: Deployment, command: str) -> str:
    return asyncio.run(send_command(d.state_dir / "haproxy.sock", command, 5.0))


def pids(d: Deployment, service: str) -> list[int]:
    return [r["pid"] for r in d.service(service)["replicas"]]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ready(d: Deployment, service: str, count: int) -> bool:
    svc = d.status()["services"].get(service)
    return svc is not None and svc["ready"] == count and svc["desired"] == count


def test_apply_adds_removes_and_changes_services_without_failing_the_untouched_one(
    deploy: Deploy,
) -> None:
    d = deploy(
        {
            "web": web_service(replicas=2),
            "api": web_service(replicas=2),
            "shop": web_service(replicas=1),
        }
    )
    d.up()
    api_pids = pids(d, "api")
    assert len(api_pids) == 2
    original = d.config_path.read_text()

    # an invalid file changes nothing and exits 3
    d.services["shop"]["replicas"] = "many"
    d.write()
    invalid = d.cli("apply", check=False)
    assert invalid.returncode == 3, invalid.stderr
    assert "services.shop.replicas" in invalid.stderr
    d.services["shop"]["replicas"] = 1

    # a key only a restart can change is refused by name, and nothing else is applied
    d.services["shop"]["replicas"] = 2
    metrics_port, d.metrics_port = d.metrics_port, free_port()
    d.write()
    refused = d.cli("apply", "-o", "json", check=False)
    assert refused.returncode == 1, refused.stderr
    assert "haproxy.metrics" in refused.stderr
    assert json.loads(refused.stdout)["restart_required"] == ["haproxy.metrics"]
    assert d.service("shop")["desired"] == 1
    # so is a new API address: the CLI finds the controller by its state dir and says so
    api_port, d.api_port = d.api_port, free_port()
    d.metrics_port = metrics_port
    d.write()
    moved = d.cli("apply", check=False)
    assert moved.returncode == 1 and "api" in moved.stderr, moved.stderr
    d.api_port = api_port
    d.config_path.write_text(original)
    d.services["shop"]["replicas"] = 1

    # the real change: add worker, remove api, shop gets 2 replicas and another health path
    d.services.pop("api")
    d.services["worker"] = web_service(replicas=1)
    d.services["shop"]["replicas"] = 2
    d.services["shop"]["health"] = {**d.services["shop"]["health"], "path": "/replica"}
    d.write()
    diff = json.loads(d.cli("apply", "--diff", "-o", "json").stdout)
    assert diff["services"] == {"added": ["worker"], "removed": ["api"], "changed": ["shop"]}
    assert diff["restart_required"] == []
    assert sorted(diff["fields"]["shop"]) == ["health.path", "replicas"]
    assert "api" in d.status()["services"]  # a dry run changes nothing

    with SteadyLoad(d.frontend("web")) as load:
        wait_for(lambda: load.sent >= 20, 30, "load running")
        applied = d.cli("apply", "-o", "json", timeout=300)
        assert json.loads(applied.stdout)["applied"] is True
        wait_for(lambda: ready(d, "worker", 1), 60, "worker ready")
        wait_for(lambda: ready(d, "shop", 2), 60, "shop at 2 replicas")
        sent_during = load.sent
        wait_for(lambda: load.sent >= sent_during + 20, 30, "load after apply")
    assert load.failed == [], f"{len(load.failed)} of {load.sent} failed: {load.failed[:5]}"
    print(f"apply under load: {load.sent} requests to the untouched service, 0 failed")

    status = d.status()["services"]
    assert set(status) == {"web", "shop", "worker"}
    wait_for(lambda: all(gone(pid) for pid in api_pids), 30, "api replicas stopped")
    backends = haproxy(d, "show backend")
    assert "be_api" not in backends and "be_worker" in backends
    config = (d.state_dir / "haproxy.cfg").read_text()
    assert "be_api" not in config and "fe_api" not in config
    assert "option httpchk GET /replica" in config
    assert httpx.get(d.frontend("worker"), trust_env=False, timeout=5).status_code == 200
    kinds = {e["kind"] for e in d.events()}
    assert {"config_applied", "service_added", "service_removed"} <= kinds

    # a restarted controller reads the same file: nothing left to apply
    again = json.loads(d.cli("apply", "--diff", "-o", "json").stdout)
    assert again["services"] == {"added": [], "removed": [], "changed": []}


def test_replicas_of_a_service_gone_from_the_config_are_stopped_at_start(
    deploy: Deploy,
) -> None:
    d = deploy({"web": web_service(replicas=1), "api": web_service(replicas=2)})
    d.up()
    api_pids = pids(d, "api")
    controller = d.controller_pid()
    os.kill(controller, signal.SIGTERM)  # the controller stops; replicas keep serving
    wait_for(lambda: gone(controller), 30, "controller stopped")
    assert not any(gone(pid) for pid in api_pids)
    d.services.pop("api")
    d.write()
    d.up()
    wait_for(lambda: all(gone(pid) for pid in api_pids), 30, "orphans stopped")
    orphans = wait_for(  # events are written behind: poll until both landed
        lambda: len(o := [e for e in d.events() if e["kind"] == "orphan_stopped"]) >= 2 and o,
        15,
        "both orphan_stopped events",
    )
    assert len(orphans) == 2
    assert "be_api" not in haproxy(d, "show backend")


def test_down_without_a_controller_stops_replicas_of_removed_services(deploy: Deploy) -> None:
    d = deploy({"web": web_service(replicas=1), "api": web_service(replicas=2)})
    d.up()
    every = pids(d, "web") + pids(d, "api")
    controller = d.controller_pid()
    os.kill(controller, signal.SIGKILL)
    wait_for(lambda: gone(controller), 30, "controller killed")
    d.services.pop("api")
    d.write()
    d.cli("down")
    wait_for(lambda: all(gone(pid) for pid in every), 30, "every replica stopped")


def last_decision(d: Deployment) -> float:
    decisions = json.loads(d.cli("events", "--decisions", "-o", "json", "--limit", "1").stdout)
    return max((x["ts"] for x in decisions["decisions"]), default=0.0)


POLICY: dict[str, Any] = {
    "min": 1,
    "max": 6,
    "interval": "2s",
    "checks": [{"kind": "target", "metric": "rps", "target": 1000}],
    "behavior": {"down": {"stabilization": "0s"}},
}


def test_scale_is_clamped_to_max_and_a_pause_survives_a_restart(deploy: Deploy) -> None:
    d = deploy({"web": web_service(replicas=1, autoscale=POLICY)})
    d.up()
    scaled = json.loads(d.cli("scale", "web", "50", "-o", "json").stdout)
    assert scaled["desired"] == 6
    assert scaled["clamped"] is not None and "max 6" in scaled["clamped"]
    assert d.service()["desired"] <= 6

    paused = json.loads(d.cli("autoscale", "pause", "web", "-o", "json").stdout)
    assert paused["paused"] is True
    d.cli("scale", "web", "3")
    wait_for(lambda: d.service()["ready"] == 3, 60, "3 replicas ready while paused")

    controller = d.controller_pid()
    os.kill(controller, signal.SIGTERM)
    wait_for(lambda: gone(controller), 30, "controller stopped")
    d.up()
    web = d.service()
    assert web["autoscale"]["paused"] is True
    explained = json.loads(d.cli("explain", "web", "-o", "json").stdout)
    assert explained["paused"] is True and "paused" in explained["reasons"][0]
    # the autoscaler would want 1 at this load: held at 3 over several of its intervals
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert d.service()["desired"] == 3
    d.cli("autoscale", "resume", "web")
    wait_for(lambda: d.service()["desired"] == 1, 30, "autoscaling again after resume")
    assert d.service()["autoscale"]["paused"] is False

    # the collector follows services that come and go: decisions go on, no source breaks
    d.services["extra"] = web_service(replicas=1)
    d.write()
    d.cli("apply")
    wait_for(lambda: ready(d, "extra", 1), 60, "extra ready")
    d.services.pop("extra")
    d.write()
    d.cli("apply")
    applied_at = time.time()
    wait_for(lambda: last_decision(d) > applied_at, 30, "web still decided after apply")
    assert not [e for e in d.events() if e["kind"] in ("collector_error", "controller_error")]
