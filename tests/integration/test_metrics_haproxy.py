"""A real HAProxy 2.6 logging to skylift's socket and answering ``show stat``.

Checks what unit tests cannot: that HAProxy, configured with LOG_FORMAT and
skylift's log ring (``log ring@...`` forwarding to a unix stream socket), sends
lines the parser reads, that a burst of lines is not lost, that p95 comes out
right, and that the backend counters give the request rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from skylift.lb.render import LOG_RING, log_ring
from skylift.lb.runtime import RuntimeClient
from skylift.metrics import (
    LOG_FORMAT,
    HAProxyStatsSource,
    LatencySource,
    LatencyTracker,
    LogSocket,
    SourceError,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

# A backend whose latency the test chooses: GET /sleep/<ms>.
APP = textwrap.dedent(
    """
    import sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else 40 ms delayed-ACK stalls per request
        def do_GET(self):
            if self.path.startswith("/sleep/"):
                time.sleep(int(self.path.rsplit("/", 1)[1]) / 1000)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *args):
            pass
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def config(state: Path, log_socket: Path, front: int, app: int) -> str:
    """The lines skylift's renderer must carry for metrics, in a minimal config."""
    ring = "\n        ".join(log_ring(str(log_socket))).strip()
    return textwrap.dedent(
        f"""
        global
            stats socket {state}/haproxy.sock mode 600 level admin
            log ring@{LOG_RING} local0
        {ring}
        defaults
            mode http
            log global
            log-format "{LOG_FORMAT}"
            option dontlognull
            timeout connect 2s
            timeout client 10s
            timeout server 10s
        frontend fe_web
            bind 127.0.0.1:{front}
            default_backend be_web
        backend be_web
            balance roundrobin
            server r1 127.0.0.1:{app}
        """
    )


async def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Stack:
    url: str
    tracker: LatencyTracker
    log_socket: LogSocket
    runtime: RuntimeClient


@pytest.fixture
async def log_socket(tmp_path: Path) -> AsyncIterator[LogSocket]:
    sock = await LogSocket.open(tmp_path / "log.sock", LatencyTracker({"be_web": "web"}))
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def haproxy(tmp_path: Path, log_socket: LogSocket) -> Iterator[str]:
    """HAProxy in front of the app; yields the frontend URL. Stops both in finally."""
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    front, app_port = free_port(), free_port()
    (tmp_path / "haproxy.cfg").write_text(config(tmp_path, log_socket.path, front, app_port))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", APP, str(app_port)]))
        procs.append(subprocess.Popen([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")]))
        yield f"http://127.0.0.1:{front}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def stack(tmp_path: Path, log_socket: LogSocket, haproxy: str) -> Stack:
    async with httpx.AsyncClient(base_url=haproxy, timeout=5.0) as client:

        async def answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return (await client.get("/")).status_code == 200
            return False

        deadline = time.monotonic() + 15
        while not await answers():
            assert time.monotonic() < deadline, "haproxy + app did not answer within 15s"
            await asyncio.sleep(0.05)
    runtime = RuntimeClient(tmp_path / "haproxy.sock")
    tracker = log_socket.receiver.tracker

    async def logs_caught_up() -> bool:
        # The readiness requests' log lines arrive asynchronously: a test that
        # swaps the tracker must not receive them late.
        rows = await runtime.show_stat("be_web")
        served = sum(r.req_tot or 0 for r in rows)
        return served >= 1 and tracker.counters.requests >= served

    deadline = time.monotonic() + 5
    while not await logs_caught_up():
        assert time.monotonic() < deadline, "the readiness requests' log lines never came"
        await asyncio.sleep(0.02)
    return Stack(haproxy, tracker, log_socket, runtime)


async def test_log_socket_is_private(stack: Stack) -> None:
    mode = os.stat(stack.log_socket.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


async def test_p95_from_real_log_lines(stack: Stack) -> None:
    await wait_for(lambda: stack.tracker.counters.requests >= 1, 15, "the readiness request's log")
    base = stack.tracker.counters.requests
    async with httpx.AsyncClient(base_url=stack.url, timeout=5.0) as client:
        for _ in range(180):
            assert (await client.get("/sleep/0")).status_code == 200
        # a burst that ends together while skylift reads nothing: the ring holds it
        stack.log_socket.receiver.pause()
        try:
            slow = await asyncio.gather(*(client.get("/sleep/150") for _ in range(20)))
        finally:
            stack.log_socket.receiver.resume()
        assert all(r.status_code == 200 for r in slow)
    # log lines arrive after their responses: on a starved host, seconds after
    await wait_for(lambda: stack.tracker.counters.requests >= base + 200, 30, "200 log lines")
    counters = stack.tracker.counters
    assert counters.requests == base + 200
    assert counters.unknown_backend == 0
    source = LatencySource(stack.tracker, stack.log_socket)
    now = time.monotonic()
    # 10% of the requests take >= 150 ms: p95 lies among them, p50 among the fast ones.
    p95 = (await source.sample("web", now))["p95_latency"]
    assert 0.150 * 0.98 <= p95 <= 0.6
    p50 = stack.tracker.quantile("web", 0.5, now)
    assert p50 is not None and p50 < 0.1  # loose: other tests may load the host


async def test_rate_connections_and_queue_from_show_stat(stack: Stack) -> None:
    source = HAProxyStatsSource(stack.runtime)
    t0 = time.monotonic()
    first = await source.sample("web", t0)
    assert first == {"connections": 0.0, "queue": 0.0}
    async with httpx.AsyncClient(base_url=stack.url, timeout=5.0) as client:
        for _ in range(50):
            assert (await client.get("/")).status_code == 200
    t1 = time.monotonic()
    second = await source.sample("web", t1)
    assert second["rps"] * (t1 - t0) == pytest.approx(50.0)
    assert second["connections"] == 0.0
    async with httpx.AsyncClient(base_url=stack.url, timeout=5.0) as client:
        slow = asyncio.gather(*(client.get("/sleep/1000") for _ in range(10)))
        deadline = time.monotonic() + 5
        while (await source.sample("web", time.monotonic()))["connections"] != 10.0:
            assert time.monotonic() < deadline, "never saw the 10 requests in flight"
            await asyncio.sleep(0.02)
        assert all(r.status_code == 200 for r in await slow)


async def test_a_stopped_log_reader_under_traffic_is_missing_not_zero(stack: Stack) -> None:
    """Finding 7 with the real HAProxy: no log line reads 0 s only when HAProxy's own
    counters say there was no request; under traffic it is a SourceError (MISSING)."""
    receiver = stack.log_socket.receiver
    receiver.tracker = tracker = LatencyTracker({"be_web": "web"}, window=2.0, slots=4)
    stats = HAProxyStatsSource(stack.runtime)
    source = LatencySource(tracker, stack.log_socket, traffic=stats.requests)
    assert await source.sample("web", time.monotonic()) == {}  # one stats poll: too early
    assert await source.sample("web", time.monotonic()) == {"p95_latency": 0.0}  # idle
    async with httpx.AsyncClient(base_url=stack.url, timeout=5.0) as client:
        for _ in range(5):
            assert (await client.get("/sleep/20")).status_code == 200
        await wait_for(lambda: tracker.count("web", time.monotonic()) >= 5, 15, "5 log lines")
        assert (await source.sample("web", time.monotonic()))["p95_latency"] >= 0.02 * 0.98

        stack.log_socket.receiver.pause()  # the reader stops; HAProxy keeps sending
        try:
            deadline = time.monotonic() + 10
            while True:  # traffic continues; once the window holds no line, it must fail
                assert (await client.get("/")).status_code == 200
                try:
                    sample = await source.sample("web", time.monotonic())
                except SourceError as exc:
                    assert "log pipeline is broken" in str(exc)
                    break
                assert sample.get("p95_latency") != 0.0, "a cut pipeline read as 0 s"
                assert time.monotonic() < deadline, "never failed with the reader stopped"
                await asyncio.sleep(0.1)
        finally:
            stack.log_socket.receiver.resume()
        assert (await client.get("/")).status_code == 200
        await wait_for(lambda: tracker.count("web", time.monotonic()) > 0, 15, "lines again")
        assert "p95_latency" in await source.sample("web", time.monotonic())
