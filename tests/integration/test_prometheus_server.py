"""PrometheusSource against the REAL Prometheus server (Debian's 2.42), not the fake.

Prometheus scrapes a small exporter this test controls (skylift's own metric
classes in a prometheus_client registry, plus a request counter), so its real
exposition parser reads what skylift exports, and the source sees the real
server's answers: a number, a PromQL error, two series, and a target that
went down. Every answer that is not one number is MISSING, never zero.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from skylift.controller.recorder import ControllerMetrics
from skylift.metrics import Collector, PrometheusSource, SourceError
from skylift.metrics.exported import SourceHealthMetrics
from skylift.metrics.health import SourceHealth
from tests.fixtures.prometheus import Job, PrometheusServer
from tests.polling import wait_for_async

Factory = Callable[[], PrometheusServer]
RATE = "sum(rate(demo_requests_total[5s]))"


class _Exporter(ThreadingHTTPServer):
    registry: CollectorRegistry


class _Handler(BaseHTTPRequestHandler):
    server: _Exporter

    def do_GET(self) -> None:
        body = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def exporter(registry: CollectorRegistry) -> Iterator[str]:
    """Serve ``registry`` on a free loopback port; yields ``host:port``; stopped at the end."""
    server = _Exporter(("127.0.0.1", 0), _Handler)
    server.registry = registry
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def registry() -> CollectorRegistry:
    """skylift's own metrics (as /metrics serves them) plus a counter the test drives."""
    metrics = ControllerMetrics()
    metrics.replicas_desired.labels("web").set(3)
    health = SourceHealth("prometheus", "web", 3.0, ("rps",))
    metrics.registry.register(SourceHealthMetrics(lambda: [health]))
    return metrics.registry


async def test_real_prometheus_answers_are_numbers_or_missing(
    prometheus_factory: Factory, registry: CollectorRegistry
) -> None:
    requests = Counter("demo_requests", "Requests", ["path"], registry=registry)
    requests.labels("/a").inc(0)
    prometheus = prometheus_factory()
    with exporter(registry) as target:
        prometheus.start({"demo": Job((target,))})
        async with httpx.AsyncClient(base_url=prometheus.url, timeout=2.0) as client:

            async def sample(query: str) -> dict[str, float]:
                answer = await PrometheusSource(client, {"web": {"rps": query}}).sample("web", 0)
                return dict(answer)

            # skylift's exposition, through the real parser: the target is up, series exist
            await wait_for_async(
                lambda: prometheus.target_health().get("demo") == "up", 20, "demo target up"
            )
            desired = prometheus.query('skylift_replicas_desired{service="web"}')
            assert [s["value"][1] for s in desired] == ["3"]
            up = prometheus.query("skylift_metric_source_up")
            assert up and up[0]["metric"]["source"] == "prometheus"
            assert prometheus.query("skylift_metric_source_errors_total")

            stop = threading.Event()

            def drive() -> None:  # ~50 requests/s on the counter, until stopped
                while not stop.wait(0.02):
                    requests.labels("/a").inc()

            driver = threading.Thread(target=drive, daemon=True)
            driver.start()
            try:

                async def busy() -> bool:
                    try:
                        return (await sample(RATE)).get("rps", 0.0) > 10.0
                    except SourceError:  # no sample scraped yet: no series
                        return False

                await _until(busy, 20, "a rate from the real Prometheus")
            finally:
                stop.set()
                driver.join(5)

            with pytest.raises(SourceError, match="bad_data"):
                await sample("sum(rate(demo_requests_total[5s]")  # a PromQL parse error
            requests.labels("/b").inc()
            await wait_for_async(
                lambda: len(prometheus.query("demo_requests_total")) == 2, 20, "two series"
            )
            with pytest.raises(SourceError, match="returned 2 series"):
                await sample("demo_requests_total")

            # The target goes down: its series go stale and the answer is empty, not 0.
            prometheus.configure({"demo": Job(("127.0.0.1:1",))})

            async def stale() -> bool:
                try:
                    await sample(RATE)
                except SourceError as exc:
                    return "returned no series" in str(exc)
                return False

            await _until(stale, 30, "the rate of a down target to be empty")
            assert prometheus.target_health()["demo"] != "up"

            # And a collector makes it MISSING (with one failing transition), never 0.
            collector = Collector(
                ["web"], [PrometheusSource(client, {"web": {"rps": RATE}})], 1.0, stale_after=2
            )
            for t in range(3):
                obs = await collector.collect(float(t))
            assert obs["web"].rps is None
            assert [c.kind for c in collector.transitions()] == ["failing"]

        prometheus.stop()
        async with httpx.AsyncClient(base_url=prometheus.url, timeout=2.0) as client:
            with pytest.raises(SourceError, match="unreachable"):
                await PrometheusSource(client, {"web": {"rps": RATE}}).sample("web", 0)


async def _until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll an async predicate with a deadline (the polling helper takes sync ones)."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.2)
