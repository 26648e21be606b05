"""Helpers of the reconcile fault tests: HAProxy's own view, the replicas' processes, figures."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from skylift.lb.runtime import RuntimeClient
from skylift.loadgen.report import LoadReport
from tests.e2e.harness import Deployment

FIGURES = Path(os.environ.get("SKYLIFT_FAULT_FIGURES", "/tmp/skylift-fault-figures.jsonl"))


def socket_path(d: Deployment) -> Path:
    return d.state_dir / "haproxy.sock"


def haproxy_servers(
    d: Deployment, service: str = "web", sock: Path | None = None
) -> dict[str, str]:
    """HAProxy's own view: server name -> folded state (up, down, maint, drain)."""
    client = RuntimeClient(sock or socket_path(d), timeout=5)
    rows = asyncio.run(client.show_stat(f"be_{service}"))
    return {row.name: str(row.state) for row in rows}


def runtime_command(d: Deployment, command: str, sock: Path | None = None) -> str:
    return asyncio.run(RuntimeClient(sock or socket_path(d), timeout=5).command(command))


def replicas(d: Deployment, service: str = "web") -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in d.service(service)["replicas"]}


def ready_ids(d: Deployment, service: str = "web") -> set[str]:
    return {rid for rid, r in replicas(d, service).items() if r["state"] == "ready"}


def replica_pids(d: Deployment) -> set[int]:
    """Live demo-app processes of this deployment (the controller and HAProxy excluded)."""
    found = set()
    for proc in d.tagged_processes():
        try:
            argv = proc.cmdline()
            # a replica's log writer names the replica's command in its header: not a replica
            if any(part.endswith("logwriter.py") for part in argv):
                continue
            if any("demo_app.py" in part for part in argv):
                found.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def events_of(d: Deployment, kind: str, service: str = "web") -> list[dict[str, Any]]:
    return [e for e in d.events(service) if e["kind"] == kind]


@dataclass
class Figures:
    """What a fault cost, for docs/reliability.md (appended as one JSON line per fault)."""

    fault: str
    sent: int = 0
    failed: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    recovered_s: float | None = None
    notes: str = ""

    def add(self, report: LoadReport) -> None:
        self.sent += report.sent
        self.failed += report.errors
        for kind, n in report.errors_by_kind.items():
            self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + n

    def write(self) -> None:
        line = {
            "fault": self.fault,
            "sent": self.sent,
            "failed": self.failed,
            "errors_by_kind": self.errors_by_kind,
            "recovered_s": None if self.recovered_s is None else round(self.recovered_s, 2),
            "notes": self.notes,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(),
        }
        print("FAULT FIGURES", json.dumps(line))
        with FIGURES.open("a") as out:
            out.write(json.dumps(line) + "\n")
