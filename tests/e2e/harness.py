"""Drive skylift the way a user does: write a config, run the CLI, read status and events.

Every deployment is torn down in a fixture: `skylift down`, then a sweep that
kills any process still carrying the deployment's run tag (replicas, HAProxy,
controller), so a failing test leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from tests import polling
from tests.ports import free_port, free_port_block

REPO = Path(__file__).resolve().parents[2]
DEMO_APP = REPO / "examples" / "apps" / "demo_app.py"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """The shared poll, slower: each poll here usually runs the CLI."""
    return polling.wait_for(predicate, timeout, what, every=0.2)


@dataclass
class Deployment:
    root: Path
    services: dict[str, dict[str, Any]]
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    api_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    store_url: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # more top-level config keys

    @property
    def config_path(self) -> Path:
        return self.root / "skylift.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def frontend(self, service: str = "web") -> str:
        return f"http://{self.services[service]['frontend']}"

    def write(self) -> None:
        config = {
            "project": "e2e",
            "state_dir": "state",
            "interval": "500ms",
            "api": {"listen": f"127.0.0.1:{self.api_port}"},
            "haproxy": {"metrics": f"127.0.0.1:{self.metrics_port}"},
            "services": self.services,
        }
        if self.store_url:
            config["store"] = {"url": self.store_url}
        config.update(self.settings)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def cli(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "skylift", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env={**os.environ, "SKYLIFT_E2E_RUN": self.run_tag},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"skylift {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                f"controller log:\n{self.controller_log()}"
            )
        return result

    def controller_log(self) -> str:
        path = self.state_dir / "controller.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(none)"

    def up(self, timeout: float = 60) -> None:
        self.cli("up", "--detach", "--timeout", str(timeout), timeout=timeout + 30)

    def api_get(self, path: str, **params: Any) -> Any:
        """GET an API route as the CLI does (same token, same JSON); None when no
        controller answers. Polls use this instead of a CLI run: each ``skylift``
        command is a Python start-up (about 1 s of CPU, measured), and a poll every
        0.2 s would take a whole core from the system under test on a busy laptop."""
        from skylift.api.token import read_token

        config = yaml.safe_load(self.config_path.read_text())
        url = f"http://{config['api']['listen']}{path}"
        headers = {"Authorization": f"Bearer {read_token(self.state_dir) or ''}"}
        try:
            response = httpx.get(url, params=params, headers=headers, timeout=30, trust_env=False)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            raise AssertionError(f"GET {url} answered {response.status_code}: {response.text}")
        return response.json()

    def status(self) -> dict[str, Any]:
        """What ``skylift status -o json`` prints (where the CLI's own output is the
        subject, a test runs ``self.cli("status")``)."""
        data = self.api_get("/api/v1/services")
        if data is None:
            raise AssertionError(
                f"status: no controller answers\ncontroller log:\n{self.controller_log()}"
            )
        return data  # type: ignore[no-any-return]

    def service(self, name: str = "web") -> dict[str, Any]:
        return self.status()["services"][name]  # type: ignore[no-any-return]

    def events(self, service: str | None = None) -> list[dict[str, Any]]:
        """What ``skylift events -o json --limit 1000`` prints: from the API while a
        controller runs, else from the CLI's offline path (it reads the store)."""
        params: dict[str, Any] = {"limit": 1000}
        if service:
            params["service"] = service
        data = self.api_get("/api/v1/events", **params)
        if data is not None:
            return data["events"]  # type: ignore[no-any-return]
        args = ["events", "-o", "json", "--limit", "1000"]
        if service:
            args += ["--service", service]
        return json.loads(self.cli(*args).stdout)["events"]  # type: ignore[no-any-return]

    def controller_pid(self) -> int:
        return int((self.state_dir / "controller.pid").read_text())

    def api_token(self) -> str:
        return (self.state_dir / "api-token").read_text().strip()

    def tagged_processes(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get("SKYLIFT_E2E_RUN") == self.run_tag:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def teardown(self) -> None:
        try:
            self.cli("down", timeout=90, check=False)
        finally:
            for proc in self.tagged_processes():
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGKILL)
            pidfile = self.state_dir / "haproxy.pid"
            if pidfile.exists():
                for pid in pidfile.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)


def web_service(
    port_block: int | None = None, replicas: int = 3, command: str | None = None, **extra: Any
) -> dict[str, Any]:
    start = port_block if port_block is not None else free_port_block(40)
    return {
        "frontend": f"127.0.0.1:{free_port()}",
        "replicas": replicas,
        "backend": {
            "kind": "process",
            "command": command
            or f"{sys.executable} {DEMO_APP} --port {{port}} --replica {{replica}}",
            "ports": {"start": start, "end": start + 39},
            # replicas get a minimal environment; the run tag finds them for cleanup
            "inherit_env": ["SKYLIFT_E2E_RUN"],
        },
        "health": {"path": "/healthz", "interval": "500ms", "fall": 2, "rise": 2, "timeout": "1s"},
        "drain_timeout": "10s",
        "stop_grace": "5s",
        "slowstart": "1s",
        "start_timeout": "20s",
        "restart": {"initial": "1s", "max": "8s", "crash_loop_after": 3},
        **extra,
    }


def deployment_factory(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(services: dict[str, dict[str, Any]] | None = None) -> Deployment:
        root = tmp_path / f"d{len(made)}"
        root.mkdir()
        deployment = Deployment(root, services or {"web": web_service()})
        deployment.write()
        made.append(deployment)
        return deployment

    try:
        yield make
    finally:
        for deployment in made:
            deployment.teardown()


class DrainWatcher:
    """Samples HAProxy's per-server request counters while a test scales in.

    A server seen in DRAIN must not count one more request afterwards: that is
    what "a draining replica gets no new requests before it stops" means.
    """

    def __init__(self, socket_path: Path, backend: str, every: float = 0.05) -> None:
        self.socket_path = socket_path
        self.backend = backend
        self.every = every
        # (t, server, state, stot): stot counts connections to the server when they are
        # made (req_tot only when a request ends); the demo app closes each connection
        # after one request, so stot counts requests as they are sent.
        self.samples: list[tuple[float, str, str, int]] = []
        self.sessions: dict[str, int] = {}  # latest current sessions per server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DrainWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        # one event loop for every sample: a new loop per sample cost enough CPU that, on
        # a busy host, samples fell seconds apart and missed a short drain
        asyncio.run(self._sample_until_stopped())

    async def _sample_until_stopped(self) -> None:
        from skylift.lb.runtime import RuntimeClient

        client = RuntimeClient(self.socket_path)
        while not self._stop.is_set():
            try:
                rows = await client.show_stat(self.backend)
            except Exception:  # socket busy during a reload: just sample again
                rows = []
            now = time.monotonic()
            for row in rows:
                self.samples.append((now, row.name, str(row.state), row.stot))
                self.sessions[row.name] = row.scur
            await asyncio.sleep(self.every)

    OUT_OF_ROTATION = ("drain", "maint")

    def busy(self, servers: int) -> bool:
        """At least ``servers`` servers hold a session right now."""
        return sum(1 for n in dict(self.sessions).values() if n > 0) >= servers

    def drained(self) -> set[str]:
        return {name for _, name, state, _ in self.samples if state in self.OUT_OF_ROTATION}

    def requests_after_drain(self) -> dict[str, int]:
        """Per server: requests counted after it left rotation (should be 0)."""
        first: dict[str, int] = {}
        grew: dict[str, int] = {}
        for _, name, state, count in self.samples:
            if name not in first and state in self.OUT_OF_ROTATION:
                first[name] = count
            elif name in first:
                grew[name] = max(grew.get(name, 0), count - first[name])
        return {name: grew.get(name, 0) for name in first}
