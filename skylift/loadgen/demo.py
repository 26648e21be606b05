"""Start the stdlib demo app (``examples/apps/demo_app.py``) as a load target.

For tests and benchmarks that need a real HTTP process to load: picks a free
port, waits for ``/healthz`` with a deadline, and always stops the process.
The default app path only exists in a source checkout.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

DEMO_APP = Path(__file__).resolve().parents[2] / "examples" / "apps" / "demo_app.py"


@dataclass
class DemoApp:
    """A running demo-app process on ``127.0.0.1:port``."""

    process: subprocess.Popen[bytes]
    port: int
    replica: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``; return the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    """A port that was free a moment ago (another process may still take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(app: DemoApp, timeout: float = 10.0) -> None:
    """Poll ``/healthz`` until 200; ``RuntimeError`` if the app exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if app.process.poll() is not None:
            raise RuntimeError(f"demo app exited with {app.process.returncode} before healthy")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{app.url}/healthz", timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo app on port {app.port} not healthy after {timeout:g}s")
        time.sleep(0.05)  # poll interval, not synchronisation: the loop checks the state


def start_demo_app(
    replica: str = "local",
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    app_path: Path = DEMO_APP,
) -> DemoApp:
    """Start the app without waiting (see ``wait_healthy``); stderr is discarded."""
    port = free_port() if port is None else port
    process = subprocess.Popen(
        [sys.executable, str(app_path), "--port", str(port), "--replica", replica],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return DemoApp(process, port, replica)


@contextlib.contextmanager
def running_demo_app(
    replica: str = "local",
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 10.0,
) -> Iterator[DemoApp]:
    """A healthy demo app for the ``with`` block; stopped (drained) on exit."""
    app = start_demo_app(replica, env=env)
    try:
        wait_healthy(app, ready_timeout)
        yield app
    finally:
        app.stop()
