"""The demo app as a real process: endpoints, CPU burn, graceful SIGTERM, fail-at-start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from skylift.loadgen.demo import DEMO_APP, free_port, running_demo_app

pytestmark = pytest.mark.integration


def test_endpoints() -> None:
    with running_demo_app("r1", env={"SKYLIFT_SERVICE": "web"}) as app:
        root = httpx.get(f"{app.url}/").json()
        assert root == {"replica": "r1", "pid": app.process.pid, "service": "web"}
        health = httpx.get(f"{app.url}/healthz")
        assert (health.status_code, health.text) == (200, "ok")
        assert httpx.get(f"{app.url}/nope").status_code == 404
        assert httpx.get(f"{app.url}/work?ms=abc").status_code == 400


def test_replica_defaults_to_env_then_local() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SKYLIFT_REPLICA"}
    for extra, expected in (({"SKYLIFT_REPLICA": "from-env"}, "from-env"), ({}, "local")):
        proc = subprocess.Popen(
            [sys.executable, str(DEMO_APP), "--port", str(port)],
            env={**env, **extra},
            stderr=subprocess.DEVNULL,
        )
        try:
            body = _get_when_up(f"http://127.0.0.1:{port}/", proc)
            assert body["replica"] == expected
            assert body["service"] is None
        finally:
            proc.terminate()
            assert proc.wait(10) == 0


def test_work_burns_cpu() -> None:
    with running_demo_app() as app:
        proc = psutil.Process(app.process.pid)
        before = sum(proc.cpu_times()[:2])
        body = httpx.get(f"{app.url}/work?ms=60").json()
        used_ms = (sum(proc.cpu_times()[:2]) - before) * 1000
        assert body["replica"] == "local"
        assert body["ms"] == 60
        assert body["cpu_ms"] >= 59.5
        # process-wide accounting is coarse (10 ms clock ticks): 20 ms of work once read as
        # 10 ms on a busy host, so the work is long enough for ticks to round away
        assert used_ms >= 40


def test_sigterm_finishes_in_flight_request_then_exits_0() -> None:
    with running_demo_app() as app:
        proc = psutil.Process(app.process.pid)
        baseline = sum(proc.cpu_times()[:2])
        result: dict[str, httpx.Response] = {}
        client = threading.Thread(
            target=lambda: result.setdefault("r", httpx.get(f"{app.url}/work?ms=500", timeout=10))
        )
        client.start()
        # The request is in flight once the app has burnt some of its CPU.
        deadline = time.monotonic() + 5
        while sum(proc.cpu_times()[:2]) - baseline < 0.1:
            assert time.monotonic() < deadline, "request never started burning CPU"
            time.sleep(0.01)
        app.process.send_signal(signal.SIGTERM)
        assert app.process.wait(10) == 0
        client.join(10)
        response = result["r"]
        assert response.status_code == 200
        assert response.json()["ms"] == 500
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{app.url}/healthz", timeout=1)


def test_fail_at_start_exits_1() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO_APP), "--port", str(free_port())],
        env={**os.environ, "DEMO_FAIL_AT_START": "1"},
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 1
    assert b"DEMO_FAIL_AT_START" in proc.stderr


def test_quiet_access_log() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(DEMO_APP), "--port", str(port)],
        stderr=subprocess.PIPE,
    )
    try:
        _get_when_up(f"http://127.0.0.1:{port}/", proc)
        httpx.get(f"http://127.0.0.1:{port}/work?ms=1")
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"GET /" not in stderr


def _get_when_up(url: str, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, f"demo app exited with {proc.returncode}"
        try:
            body: dict[str, object] = httpx.get(url, timeout=1).json()
            return body
        except httpx.ConnectError:
            assert time.monotonic() < deadline, "demo app never came up"
            time.sleep(0.05)
