"""skylift's probe and HAProxy's check agree on what a healthy status is (real HAProxy).

A replica whose /healthz answers 204 is healthy in both; one answering 301 is
unhealthy in both (it used to pass skylift's probe, < 400, and fail HAProxy's
``expect status 200``: a crash loop with a misleading reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from skylift.backends.memory import MemoryBackend
from skylift.config import HAProxySettings, HealthCheck, ProcessBackend, Service
from skylift.controller.recorder import ControllerMetrics, Recorder
from skylift.controller.service import ServiceLoop
from skylift.lb import HAProxyBalancer, ServerState
from skylift.lb.process import pid_alive
from skylift.model import Replica
from tests.ports import free_port
from tests.unit.controller.fakes import FakeStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed"),
]


class StatusServer:
    """Answers ``status`` on /healthz and 200 elsewhere."""

    def __init__(self, status: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                code = status if self.path == "/healthz" else 200
                self.send_response(code)
                if code == 301:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # health checks hang up early

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def replica(self, replica_id: str) -> Replica:
        return Replica(id=replica_id, service="web", host="127.0.0.1", port=self.port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[dict[int, StatusServer]]:
    made = {code: StatusServer(code) for code in (204, 301)}
    yield made
    for server in made.values():
        server.close()


@pytest.fixture
async def balancer() -> AsyncIterator[HAProxyBalancer]:
    root = Path(tempfile.mkdtemp(prefix="sl-health-"))  # short: unix socket path limit
    lb = HAProxyBalancer(root / "state", HAProxySettings(metrics=f"127.0.0.1:{free_port()}"))
    try:
        yield lb
    finally:
        await lb.stop()
        with contextlib.suppress(OSError, ValueError):
            pid = int((root / "state" / "haproxy.pid").read_text())
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


async def test_204_is_healthy_and_301_unhealthy_in_both(
    balancer: HAProxyBalancer, servers: dict[int, StatusServer]
) -> None:
    service = Service(
        frontend=f"127.0.0.1:{free_port()}",
        backend=ProcessBackend(command="app --port {port}"),
        health=HealthCheck(path="/healthz", interval=0.2, timeout=0.5, fall=2, rise=1),
        slowstart=0.0,
    )
    await balancer.start({"web": service}, {})
    store = FakeStore()
    loop = ServiceLoop(
        "web",
        service,
        MemoryBackend("web"),
        balancer,
        store,
        Recorder(store, ControllerMetrics()),
        desired=0,
    )
    try:
        probe = {
            code: await loop._answers_health(s.replica(f"r{code}")) for code, s in servers.items()
        }
    finally:
        await loop.close()
    assert probe == {204: True, 301: False}

    for code, server in servers.items():
        await balancer.add("web", server.replica(f"r{code}"))
    deadline = time.monotonic() + 15
    states: dict[str, ServerState] = {}
    while time.monotonic() < deadline:
        states = {name: s.state for name, s in (await balancer.status("web")).items()}
        if states == {"r204": ServerState.UP, "r301": ServerState.DOWN}:
            break
        await asyncio.sleep(0.1)
    assert states == {"r204": ServerState.UP, "r301": ServerState.DOWN}
    config = (balancer.process.paths.config).read_text()
    assert "http-check expect status 200-299" in config
