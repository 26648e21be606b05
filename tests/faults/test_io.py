"""I/O faults: a frozen dockerd and a stopped PostgreSQL store, each under steady load.

What they prove (issue 12, "I/O off the event loop"): a hung dependency stalls
only what needs it. With dockerd frozen (SIGSTOP), a process-backend service in
the same controller still scales and ``/livez`` names the stuck docker service
loop; with the store stopped, traffic and replicas are unaffected and what
happened meanwhile is written once the store is back. The figures each test
measures are printed (``-s``) for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from skylift.loadgen import constant_plan, run_load_in_thread
from skylift.store import Store
from tests.e2e.harness import Deployment, wait_for, web_service
from tests.faults.io_support import livez, private_dockerd, start_postgres, stop_postgres
from tests.fixtures.docker import build_test_images
from tests.fixtures.postgres import running_cluster

Deploy = Callable[..., Deployment]
FAULT_SECONDS = 20.0
RPS = 10  # per frontend: steady and far below what the machine serves


def ready(d: Deployment, service: str) -> int:
    return sum(1 for r in d.service(service)["replicas"] if r["state"] == "ready")


def report_figures(name: str, figures: dict[str, Any]) -> None:
    print(f"\n[io-fault] {name}: {json.dumps(figures, sort_keys=True)}")


def test_frozen_dockerd_stalls_only_the_docker_service(
    deploy: Deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_dockerd() as engine:
        monkeypatch.setenv("DOCKER_HOST", engine.host)  # the CLI, controller and image build
        image, _ = build_test_images(engine.client)
        dock = web_service(replicas=2)
        dock["backend"] = {"kind": "docker", "image": image, "port": 8080, "memory": "64Mi"}
        d = deploy({"web": web_service(replicas=2), "dock": dock})
        d.settings["project"] = f"io-{d.run_tag[:8]}"
        d.write()
        try:
            d.up(timeout=120)
            assert ready(d, "web") == 2 and ready(d, "dock") == 2
            api = f"127.0.0.1:{d.api_port}"
            assert livez(api)[0] == 200
            duration = 3 * FAULT_SECONDS + 60
            web_plan = constant_plan(d.frontend("web"), "/replica", rps=RPS, duration=duration)
            dock_plan = constant_plan(d.frontend("dock"), "/replica", rps=RPS, duration=duration)
            with run_load_in_thread(web_plan) as web_load, run_load_in_thread(dock_plan) as dload:
                wait_for(lambda: web_load.progress and web_load.progress.sent > 20, 15, "load")
                os.kill(engine.pid, signal.SIGSTOP)
                frozen_at = time.monotonic()
                try:
                    # the process service scales while the Engine is frozen
                    d.cli("scale", "web", "4")
                    wait_for(lambda: ready(d, "web") == 4, FAULT_SECONDS, "web to reach 4")
                    scaled_in = time.monotonic() - frozen_at
                    # /livez names the docker service's loop and what it waits on
                    named = wait_for(
                        lambda: (
                            (s := livez(api))[0] == 503
                            and any("'dock'" in x["loop"] for x in s[1].get("stuck", []))
                            and s[1]
                        ),
                        FAULT_SECONDS,
                        "/livez to name the stuck docker service loop",
                    )
                    named_in = time.monotonic() - frozen_at
                    (stuck,) = [x for x in named["stuck"] if "'dock'" in x["loop"]]
                    assert "Docker Engine" in stuck["waiting_on"], stuck
                    assert not any("'web'" in x["loop"] for x in named["stuck"]), named
                    assert "'dock'" in named["message"]
                    left = FAULT_SECONDS - (time.monotonic() - frozen_at)
                    if left > 0:
                        time.sleep(left)  # hold the fault for its full length
                    assert ready(d, "web") == 4  # still scaling fine, still serving
                finally:
                    os.kill(engine.pid, signal.SIGCONT)
                thawed_at = time.monotonic()
                wait_for(lambda: livez(api)[0] == 200, 60, "/livez to recover after SIGCONT")
                live_again_in = time.monotonic() - thawed_at
                # the docker service acts again: it scales out
                d.cli("scale", "dock", "3")
                wait_for(lambda: ready(d, "dock") == 3, 60, "dock to reach 3 after the thaw")
                recovered_in = time.monotonic() - thawed_at
                web_load.stop()
                dload.stop()
            web_report, dock_report = web_load.result(), dload.result()
            kinds = [e["kind"] for e in d.events("dock")]
            assert "backend_unreachable" in kinds and "backend_reachable" in kinds, kinds
            web_events = d.events("web")
            (asked,) = [e["ts"] for e in web_events if e["kind"] == "scaled"]
            became_ready = [
                e["ts"] for e in web_events if e["kind"] == "replica_ready" and e["ts"] > asked
            ]
            assert len(became_ready) == 2, web_events
            report_figures(
                "dockerd SIGSTOP",
                {
                    "fault_s": FAULT_SECONDS,
                    "web_sent": web_report.sent,
                    "web_failed": web_report.errors,
                    "dock_sent": dock_report.sent,
                    "dock_failed": dock_report.errors,
                    "web_scaled_to_4_during_fault_s": round(scaled_in, 1),
                    "web_scale_to_ready_by_events_s": round(max(became_ready) - asked, 1),
                    "livez_named_loop_s": round(named_in, 1),
                    "livez_ok_after_sigcont_s": round(live_again_in, 1),
                    "dock_scaled_to_3_after_sigcont_s": round(recovered_in, 1),
                },
            )
            assert web_report.errors == 0, web_report.errors_by_kind
            assert dock_report.errors == 0, dock_report.errors_by_kind
            assert web_report.ok == web_report.sent > 100
            assert dock_report.ok == dock_report.sent > 100
        finally:
            d.cli("down", timeout=120, check=False)  # while our dockerd still runs


def _scaled_events(url: str) -> list[dict[str, Any]]:
    with Store.open(url) as store:
        return [
            {"ts": e.ts, "data": e.data}
            for e in store.events(service="web", limit=1000)
            if e.kind == "scaled"
        ]


def test_stopped_store_leaves_traffic_and_replicas_alone(deploy: Deploy) -> None:
    with running_cluster() as cluster:
        database = "io_fault"
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        url = cluster.url(database)
        d = deploy({"web": web_service(replicas=2)})
        # a lease longer than the outage: the controller acts only while its lease holds
        # (renewed in the store), and on a busy host a scale-out can outlast the default 10 s
        d.settings["store"] = {"url": url, "lease": "60s"}
        d.write()
        try:
            d.up(timeout=90)
            api = f"127.0.0.1:{d.api_port}"
            token = d.api_token()
            plan = constant_plan(d.frontend("web"), "/replica", rps=2 * RPS, duration=150)
            with run_load_in_thread(plan) as load:
                wait_for(lambda: load.progress and load.progress.sent > 40, 15, "load")
                stop_postgres(cluster)
                stopped_at = time.monotonic()
                wall_stopped = time.time()
                try:
                    # the controller acts while its store is down: scale out, and it is done
                    d.cli("scale", "web", "3")
                    wait_for(lambda: ready(d, "web") == 3, FAULT_SECONDS, "web to reach 3")
                    listing = httpx.get(
                        f"http://{api}/api/v1/events",
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=30,
                        trust_env=False,
                    )
                    assert listing.status_code == 503, listing.text
                    assert "store" in listing.json()["error"]
                    assert livez(api)[0] == 200  # riding out a store outage is not stuck
                    left = FAULT_SECONDS - (time.monotonic() - stopped_at)
                    if left > 0:
                        time.sleep(left)
                    assert ready(d, "web") == 3
                finally:
                    start_postgres(cluster)
                started_at = time.monotonic()
                scaled = wait_for(
                    lambda: [
                        e
                        for e in _scaled_events(url)
                        if e["data"].get("new") == 3 and e["ts"] >= wall_stopped
                    ],
                    60,
                    "the scale done during the outage to be in the store",
                )
                written_in = time.monotonic() - started_at
                load.stop()
            report = load.result()
            # the event keeps the time it happened, inside the outage
            assert wall_stopped <= scaled[0]["ts"] <= wall_stopped + FAULT_SECONDS + 5
            kinds = [e["kind"] for e in d.events("web")] + [e["kind"] for e in d.events()]
            assert "store_available" in kinds, kinds
            with Store.open(url) as store:
                records = store.replicas(service="web")
            assert len(records) == 3 and ready(d, "web") == 3
            report_figures(
                "PostgreSQL store stopped",
                {
                    "fault_s": FAULT_SECONDS,
                    "sent": report.sent,
                    "failed": report.errors,
                    "events_written_after_restart_s": round(written_in, 1),
                },
            )
            assert report.errors == 0, report.errors_by_kind
            assert report.ok == report.sent > 200
        finally:
            d.cli("down", timeout=120, check=False)  # while the store still runs
