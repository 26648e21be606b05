"""Autoscaling from PromQL through the REAL Prometheus server (Debian's 2.42).

Prometheus scrapes HAProxy's exporter and skylift's own ``/metrics`` (with the
API token); the service's ``rps`` is a PromQL query over HAProxy's counter. Load
raises the count; HAProxy's target going down makes ``rps`` MISSING (an event,
explain names the failing source, no scale-in), never zero; back up, the idle
service scales in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from skylift.loadgen import constant_plan, run_load_in_thread
from tests.e2e.harness import Deployment, wait_for, web_service
from tests.fixtures.prometheus import Job, PrometheusServer

Deploy = Callable[..., Deployment]

QUERY = 'sum(rate(haproxy_backend_http_requests_total{proxy="be_web"}[5s]))'
TARGET = 10.0  # requests/s per replica
DOWN_STABILIZATION = 8.0
POLICY: dict[str, Any] = {
    "min": 1,
    "max": 4,
    "interval": "1s",
    "checks": [{"kind": "target", "metric": "rps", "target": TARGET, "tolerance": "10%"}],
    "behavior": {
        "up": {"stabilization": "0s"},
        "down": {"stabilization": f"{DOWN_STABILIZATION:g}s"},
    },
}


def prometheus_events(d: Deployment, kind: str, service: str = "web") -> list[dict[str, Any]]:
    return [
        e
        for e in d.events(service)
        if e["kind"] == f"metrics_source_{kind}"
        and (e.get("data") or {}).get("source") == "prometheus"
    ]


def value(prometheus: PrometheusServer, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_autoscales_from_promql_through_a_real_prometheus(
    deploy: Deploy, prometheus_factory: Callable[[], PrometheusServer]
) -> None:
    prometheus = prometheus_factory()
    d = deploy({"web": web_service(replicas=1), "api": web_service(replicas=2)})
    d.services["web"]["autoscale"] = POLICY
    d.services["web"]["prometheus"] = {"rps": QUERY}
    # api's query is broken PromQL: a query error, which must hold api at 2, not read as 0
    d.services["api"]["autoscale"] = POLICY
    d.services["api"]["prometheus"] = {"rps": QUERY.replace("be_web", "be_api")[:-1]}
    d.settings = {
        "interval": "1s",
        "metrics": {"window": "4s", "prometheus_url": prometheus.url},
    }
    d.write()
    jobs = {
        "haproxy": Job((f"127.0.0.1:{d.metrics_port}",)),
        "skylift": Job((f"127.0.0.1:{d.api_port}",), token_file=d.state_dir / "api-token"),
    }
    prometheus.start(jobs)
    d.up()

    # The real parser reads both expositions: targets up, skylift_ series present.
    wait_for(
        lambda: prometheus.target_health() == {"haproxy": "up", "skylift": "up"},
        30,
        "Prometheus to scrape HAProxy and skylift",
    )
    wait_for(
        lambda: value(prometheus, 'skylift_replicas_desired{service="web"}') == 1.0,
        20,
        "skylift_replicas_desired in Prometheus",
    )
    wait_for(  # web's query answers once Prometheus has scraped HAProxy twice (a rate)
        lambda: (
            value(prometheus, 'skylift_metric_source_up{source="prometheus",service="web"}') == 1
        ),
        30,
        "web's Prometheus source up",
    )
    wait_for(lambda: prometheus_events(d, "failing", "api"), 30, "api's query error reported")
    broken = prometheus_events(d, "failing", "api")[0]
    assert "bad_data" in broken["message"], broken["message"]

    plan = constant_plan(d.frontend(), "/work?ms=5", rps=25, duration=120)
    with run_load_in_thread(plan) as load:
        wait_for(lambda: d.service()["ready"] == 3, 60, "3 replicas for 25 requests/s")
        explained = json.loads(d.cli("explain", "web", "-o", "json").stdout)
        assert 15 < explained["inputs"]["rps"] < 35, explained["inputs"]

        # HAProxy's target goes down while the load still runs, then the load stops:
        # the query answers no series, which must hold the count, not read as 0 rps.
        prometheus.configure({**jobs, "haproxy": Job(("127.0.0.1:1",))})
        down_at = time.monotonic()
        wait_for(lambda: prometheus_events(d, "failing"), 30, "a failing event for prometheus")
        detected = time.monotonic() - down_at
        load.stop()
        failing = prometheus_events(d, "failing")[0]
        assert "returned no series" in failing["message"], failing["message"]
        assert failing["data"]["metrics"] == ["rps"]
        explained = wait_for(  # the event and explain's view may be a pass apart
            lambda: (
                e
                if {"source": "prometheus", "metrics": ["rps"]}
                in (e := json.loads(d.cli("explain", "web", "-o", "json").stdout))[
                    "failing_sources"
                ]
                and e["inputs"]["rps"] is None  # the next decision saw rps missing
                else None
            ),
            20,
            "explain to name the failing prometheus source",
        )
        assert explained["inputs"]["rps"] is None
        wait_for(
            lambda: (
                value(prometheus, 'skylift_metric_source_up{source="prometheus",service="web"}')
                == 0
            ),
            20,
            "skylift_metric_source_up 0, seen by Prometheus itself",
        )
        deadline = time.monotonic() + DOWN_STABILIZATION + 8
        while time.monotonic() < deadline:
            svc = d.service()
            assert svc["desired"] == 3, "scaled in while rps was unknown"
            time.sleep(1)  # observing that nothing changes, not waiting for a change
    report = load.result()

    prometheus.configure(jobs)  # the target is back: the idle service scales in
    back_at = time.monotonic()
    wait_for(lambda: prometheus_events(d, "recovered"), 30, "the prometheus source to recover")
    recovered = time.monotonic() - back_at
    wait_for(lambda: d.service()["desired"] == 1, 60, "scale-in once Prometheus sees again")
    api = json.loads(d.cli("explain", "api", "-o", "json").stdout)
    assert {"source": "prometheus", "metrics": ["rps"]} in api["failing_sources"]
    assert api["inputs"]["rps"] is None and d.service("api")["desired"] == 2  # never scaled in
    print(
        f"prometheus e2e: sent {report.sent}, failed {report.errors}; failing event "
        f"{detected:.1f}s after the target went down, recovered {recovered:.1f}s after it was back"
    )
    assert report.errors == 0, report.errors_by_kind
