"""Phase 1 end to end: the real CLI, a real HAProxy, real replica processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Callable

import httpx
import psutil

from skylift.loadgen import constant_plan, run_load_in_thread
from tests.e2e.harness import Deployment, DrainWatcher, wait_for, web_service

Deploy = Callable[..., Deployment]


def ready_pids(d: Deployment, service: str = "web") -> dict[str, int]:
    svc = d.service(service)
    return {r["id"]: r["pid"] for r in svc["replicas"] if r["state"] == "ready"}


def test_quickstart_spreads_requests_over_all_replicas(deploy: Deploy) -> None:
    d = deploy()
    up = json.loads(d.cli("up", "--detach", "-o", "json").stdout)
    assert up["services"]["web"]["ready"] == 3 and up["pid"] == d.controller_pid()
    svc = d.service()
    assert svc["desired"] == 3 and svc["ready"] == 3
    assert {r["state"] for r in svc["replicas"]} == {"ready"}
    seen: dict[str, int] = {}
    with httpx.Client(base_url=d.frontend(), trust_env=False) as client:
        for _ in range(300):
            response = client.get("/")
            assert response.status_code == 200
            body = response.json()
            seen[body["replica"]] = seen.get(body["replica"], 0) + 1
    assert set(seen) == {r["id"] for r in svc["replicas"]}
    assert min(seen.values()) >= 50  # round robin, give or take slowstart


def test_kill_9_under_load_loses_nothing_and_is_replaced(deploy: Deploy) -> None:
    d = deploy()
    d.up()
    before = ready_pids(d)
    victim_id, victim_pid = sorted(before.items())[0]
    with run_load_in_thread(constant_plan(d.frontend(), "/", rps=50, duration=20)) as load:
        wait_for(lambda: load.progress and load.progress.sent > 100, 15, "load to start")
        killed_at = time.monotonic()
        os.kill(victim_pid, signal.SIGKILL)
        replaced = wait_for(
            lambda: (p := ready_pids(d)) and victim_id not in p and len(p) == 3 and p,
            10,
            "a replacement replica ready within 10 s",
        )
        took = time.monotonic() - killed_at
    report = load.result()
    assert report.sent >= 990
    assert report.errors == 0, report.errors_by_kind
    assert report.ok == report.sent
    assert took < 10
    assert len(set(replaced) - set(before)) == 1
    kinds = [(e["kind"], (e.get("data") or {}).get("replica")) for e in d.events("web")]
    # "exited" for a long-lived replica, "crashed" when it died soon after start-up
    assert {("replica_exited", victim_id), ("replica_crashed", victim_id)} & set(kinds), kinds


def test_scale_out_and_in_under_load_loses_nothing(deploy: Deploy) -> None:
    d = deploy()
    d.up()
    # slow requests keep sessions open, so each drain lasts long enough to be watched
    slow_plan = constant_plan(d.frontend(), "/sleep?ms=1500", rps=20, duration=30)
    with (
        run_load_in_thread(constant_plan(d.frontend(), "/", rps=50, duration=30)) as load,
        run_load_in_thread(slow_plan) as slow,
    ):
        wait_for(lambda: load.progress and load.progress.sent > 50, 15, "load to start")
        d.cli("scale", "web", "6")
        wait_for(lambda: d.service()["ready"] == 6, 20, "6 ready replicas")
        with DrainWatcher(d.state_dir / "haproxy.sock", "be_web") as watcher:
            wait_for(lambda: watcher.busy(6), 15, "slow requests in flight on all 6 replicas")
            d.cli("scale", "web", "2")
            wait_for(
                lambda: len(d.service()["replicas"]) == 2 and d.service()["ready"] == 2,
                25,
                "scale-in to 2 replicas",
            )
        load.stop()
        slow.stop()
    report = load.result()
    slow_report = slow.result()
    assert slow_report.errors == 0, slow_report.errors_by_kind
    assert len(watcher.drained()) == 4, watcher.drained()
    assert watcher.requests_after_drain() == dict.fromkeys(watcher.drained(), 0)
    assert report.errors == 0, report.errors_by_kind
    assert report.ok == report.sent > 200
    assert len(report.replicas) >= 6  # traffic reached the scaled-out replicas
    stopped = [e for e in d.events("web") if e["kind"] == "replica_stopped"]
    assert len(stopped) == 4
    assert all((e.get("data") or {}).get("reason") == "scale_in" for e in stopped)


def test_controller_sigkill_restart_adopts_replicas(deploy: Deploy) -> None:
    d = deploy()
    d.up()
    before = ready_pids(d)
    with run_load_in_thread(constant_plan(d.frontend(), "/", rps=50, duration=15)) as load:
        wait_for(lambda: load.progress and load.progress.sent > 50, 15, "load to start")
        controller = d.controller_pid()
        os.kill(controller, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(controller), 5, "controller to die")
        d.up()
        after = ready_pids(d)
    report = load.result()
    assert after == before, "restarted controller must adopt the same processes"
    assert report.errors == 0, report.errors_by_kind
    assert report.ok == report.sent
    starts = [e for e in d.events("web") if e["kind"] == "replica_started"]
    assert len(starts) == 3  # no duplicates were started
    assert any(e["kind"] == "replicas_adopted" for e in d.events("web"))


def test_crash_loop_backs_off_and_spares_other_services(deploy: Deploy) -> None:
    from tests.e2e.harness import DEMO_APP

    crashing = web_service(replicas=2)
    crashing["backend"]["env"] = {"DEMO_FAIL_AT_START": "1"}
    d = deploy({"web": web_service(), "broken": crashing})
    result = d.cli("up", "--detach", "--timeout", "8", check=False, timeout=60)
    assert result.returncode != 0
    assert "broken" in result.stderr
    broken = wait_for(
        lambda: (s := d.service("broken"))["state"] == "crash-loop" and s, 30, "crash-loop state"
    )
    assert broken["crash"]["failures"] >= 3
    assert broken["crash"]["last_reason"]
    assert broken["ready"] == 0
    web = d.service("web")
    assert web["ready"] == 3 and web["state"] == "ok"
    assert httpx.get(d.frontend("web") + "/", trust_env=False).status_code == 200
    crashes = [e for e in d.events("broken") if e["kind"] == "replica_crashed"]
    assert len(crashes) >= 3
    backoffs = [e["data"]["backoff_seconds"] for e in crashes]
    assert backoffs == sorted(backoffs) and backoffs[0] == 1 and backoffs[-1] >= 4, backoffs
    # back-off: starts get further apart (1 s, 2 s, 4 s ...), never a tight loop
    starts = [e["ts"] for e in d.events("broken") if e["kind"] == "replica_started"]
    assert len(starts) <= 8
    status_text = d.cli("status").stdout
    assert "crash-loop" in status_text
    assert DEMO_APP.exists()


def test_invalid_config_exits_3_with_every_error(deploy: Deploy) -> None:
    d = deploy()
    d.config_path.write_text(
        "services:\n  web:\n    frontend: 127.0.0.1:8080\n    colour: red\n"
        "    health: {interval: soon}\n    backend: {kind: process}\n"
    )
    result = d.cli("up", "--detach", check=False)
    assert result.returncode == 3
    for path in (
        "services.web.colour",
        "services.web.health.interval",
        "services.web.backend.command",
    ):
        assert path in result.stderr


def test_api_needs_token_and_admin_socket_is_private(deploy: Deploy) -> None:
    d = deploy()
    d.up()
    base = f"http://127.0.0.1:{d.api_port}"
    assert httpx.get(f"{base}/api/v1/services", trust_env=False).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{base}/metrics", headers=wrong, trust_env=False).status_code == 401
    good = {"Authorization": f"Bearer {d.api_token()}"}
    assert httpx.get(f"{base}/api/v1/services", headers=good, trust_env=False).status_code == 200
    metrics = httpx.get(f"{base}/metrics", headers=good, trust_env=False).text
    assert 'skylift_replicas_ready{service="web"} 3.0' in metrics
    assert httpx.get(f"{base}/livez", trust_env=False).status_code == 200
    assert stat.S_IMODE((d.state_dir / "api-token").stat().st_mode) == 0o600
    sockets = [p for p in d.state_dir.iterdir() if p.is_socket()]
    assert sockets, "HAProxy's admin socket should live in the state dir"
    for sock in sockets:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600, sock
    assert stat.S_IMODE(d.state_dir.stat().st_mode) == 0o700
