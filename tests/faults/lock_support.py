"""Helpers of the controller-lease fault tests: two controllers on one PostgreSQL store,
steady load, and the views that show who acted (HAProxy, the processes, the lease row)."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from sqlalchemy import create_engine, text

from skylift.lb.render import backend_name
from skylift.lb.runtime import RuntimeClient
from tests.e2e.harness import Deployment, wait_for


def dsn(store_url: str) -> str:
    return store_url.replace("postgresql+psycopg://", "postgresql://")


def _json(value: Any) -> dict[str, Any]:
    """JSONB comes back as a dict (PostgreSQL), JSON as text (SQLite)."""
    return dict(json.loads(value) if isinstance(value, str) else value or {})


def _query(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def lease_row(url: str) -> dict[str, Any] | None:
    """The lease as the store holds it; ``expires_in`` by the database's clock."""
    now = (
        "extract(epoch FROM clock_timestamp())"
        if url.startswith("postgresql")
        else str(time.time())
    )
    rows = _query(
        url,
        f"SELECT epoch, holder, expires_at - {now} FROM controller_lease WHERE name = 'controller'",
    )
    if not rows:
        return None
    epoch, holder, expires_in = rows[0]
    return {"epoch": epoch, "pid": int(_json(holder)["pid"]), "expires_in": float(expires_in)}


def events_since(url: str, after_id: int) -> list[dict[str, Any]]:
    rows = _query(
        url, "SELECT id, kind, data FROM events WHERE id > :after ORDER BY id", after=after_id
    )
    return [{"id": r[0], "kind": r[1], "data": _json(r[2])} for r in rows]


def last_event_id(url: str) -> int:
    rows = _query(url, "SELECT coalesce(max(id), 0) FROM events")
    return int(rows[0][0]) if rows else 0


def terminate_lock_connections(url: str, controller_pid: int) -> int:
    """``pg_terminate_backend`` every lease connection of that controller (by application_name)."""
    with psycopg.connect(dsn(url), connect_timeout=5, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"skylift-controller pid={controller_pid} %",),
        ).fetchall()
    return len(rows)


def lease_connections(url: str, controller_pid: int) -> int:
    with psycopg.connect(dsn(url), connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"skylift-controller pid={controller_pid} %",),
        ).fetchone()
    return int(row[0]) if row else 0


def haproxy_servers(d: Deployment, service: str = "web") -> set[str]:
    client = RuntimeClient(d.state_dir / "haproxy.sock")
    rows = asyncio.run(client.show_stat(backend_name(service)))
    return {row.name for row in rows}


def replica_containers(client: Any, d: Deployment) -> dict[str, tuple[str, str | None]]:
    """Replica id -> (container id, ``skylift.epoch`` label) of the deployment's containers."""
    found = client.api.containers(filters={"label": f"skylift.project={d.settings['project']}"})
    return {
        c["Labels"]["skylift.replica"]: (c["Id"], c["Labels"].get("skylift.epoch")) for c in found
    }


def replica_processes(d: Deployment, service: str = "web") -> dict[str, tuple[int, str | None]]:
    """Replica id -> (pid, SKYLIFT_EPOCH) of the service's running processes, from /proc."""
    found: dict[str, tuple[int, str | None]] = {}
    for proc in d.tagged_processes():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            env = proc.environ()
            ours = env.get("SKYLIFT_SERVICE") == service and "SKYLIFT_REPLICA" in env
            if ours and proc.status() != psutil.STATUS_ZOMBIE:
                found[env["SKYLIFT_REPLICA"]] = (proc.pid, env.get("SKYLIFT_EPOCH"))
    return found


@dataclass
class Controller:
    """A controller process this test started (so its exit status is ours to read)."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGCONT then SIGKILL: never leave a frozen or running controller behind."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def start_controller(d: Deployment, name: str, *args: str) -> Controller:
    log = d.root / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "skylift", "up", *args, "-c", str(d.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=d.root,
            start_new_session=True,
            env={**os.environ, "SKYLIFT_E2E_RUN": d.run_tag},
        )
    return Controller(proc, log)


def wait_ready(d: Deployment, replicas: int, timeout: float = 90) -> None:
    def ready() -> bool:
        try:
            return int(d.service()["ready"]) >= replicas
        except (AssertionError, KeyError):  # no answer yet, or the services not yet listed
            return False

    wait_for(ready, timeout, f"{replicas} ready replicas")


@dataclass
class SteadyLoad:
    """A few requests a second to one frontend, counting every failure (well under capacity)."""

    url: str
    rate: float = 20.0
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SteadyLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self.sent += 1
                try:
                    response = client.get(self.url, headers={"Connection": "close"})
                    if response.status_code != 200:
                        self.failed += 1
                        self.errors.append(f"status {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failed += 1
                    self.errors.append(repr(exc))
                self._stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - started)))


def api_epoch(d: Deployment) -> int | None:
    """The epoch the controller answering the API reports (None while none answers)."""
    result = d.cli("status", "-o", "json", check=False, timeout=30)
    if result.returncode != 0:
        return None
    epoch = json.loads(result.stdout)["controller"].get("epoch")
    return int(epoch) if epoch is not None else None
