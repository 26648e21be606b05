"""Live scale-out reaction: from the load crossing the threshold to a new replica serving.

Two deployments run side by side on free ports in a temp dir (process
backend, demo app, `interval: 1s`, health `inter 500ms rise 2`, `slowstart
1s`), both like examples/autoscale.yaml:

  auto    autoscale: rps target 30/replica (10 % tolerance), autoscale interval
          2s, metrics window 4s, up stabilization 0s, down 15s; min 1, max 6
  manual  the same service without autoscale (the baseline)

Each repeat, interleaved: ``auto`` starts at 1 replica under 10 rps of
``/work?ms=5`` (open loop, ``skylift.loadgen``), then the offered load steps
to 80 rps (the threshold, 30 x 1.1 = 33 rps for one replica, is crossed at
the step). The clock runs from the step to the first response through the
frontend from a replica id not seen before; its parts come from
``skylift events -o json`` (wall-clock ``ts``): the ``autoscaled`` decision,
``replica_started``, ``replica_ready``. Load stops, and the next repeat waits
for the autoscaler to go back to 1 replica. ``manual`` then gets the same 80
rps and a ``skylift scale web 2`` (the CLI path of
benchmarks/scale_to_serving.py), timed the same way, and is scaled back to 1.

Run: .venv/bin/python benchmarks/autoscale_reaction.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skylift.loadgen import LoadPlan, constant_schedule, run_load_in_thread  # noqa: E402
from tests.ports import free_port_block  # noqa: E402

TARGET_RPS = 30.0
TOLERANCE = 0.10
LOW_RPS = 10.0
HIGH_RPS = 80.0
WORK_PATH = "/work?ms=5"
POLICY: dict[str, Any] = {
    "min": 1,
    "max": 6,
    "interval": "2s",
    "checks": [
        {"kind": "target", "metric": "rps", "target": TARGET_RPS, "tolerance": "10%"},
    ],
    "behavior": {"up": {"stabilization": "0s"}, "down": {"stabilization": "15s"}},
}


def service(autoscale: bool, base: int) -> dict[str, Any]:
    start = base + 3
    svc: dict[str, Any] = {
        "frontend": f"127.0.0.1:{base + 2}",
        "replicas": 1,
        "backend": {
            "kind": "process",
            "command": f"{sys.executable} {REPO / 'examples/apps/demo_app.py'} "
            "--port {port} --replica {replica}",
            "ports": {"start": start, "end": start + 39},
        },
        "health": {"path": "/healthz", "interval": "500ms", "fall": 2, "rise": 2},
        "resources": {"cpu": "250m", "memory": "128Mi"},
        "drain_timeout": "10s",
        "stop_grace": "5s",
        "slowstart": "1s",
    }
    if autoscale:
        svc["autoscale"] = POLICY
    return svc


@dataclass
class Deployment:
    root: Path
    autoscale: bool
    svc: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True)
        base = free_port_block(43)  # API, HAProxy metrics, frontend, 40 replica ports
        self.svc = service(self.autoscale, base)
        config = {
            "project": f"react-{'auto' if self.autoscale else 'manual'}",
            "state_dir": "state",
            "interval": "1s",
            "api": {"listen": f"127.0.0.1:{base}"},
            "haproxy": {"metrics": f"127.0.0.1:{base + 1}"},
            "metrics": {"window": "4s"},
            "services": {"web": self.svc},
        }
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def config(self) -> Path:
        return self.root / "skylift.yaml"

    @property
    def frontend(self) -> str:
        return f"http://{self.svc['frontend']}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skylift", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            cwd=self.root,
        )

    def web(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "-o", "json").stdout)["services"]["web"]  # type: ignore[no-any-return]

    def events(self) -> list[dict[str, Any]]:
        out = self.cli("events", "-o", "json", "--service", "web", "--limit", "1000").stdout
        return json.loads(out)["events"]  # type: ignore[no-any-return]

    def settled_at_one(self, timeout: float = 90) -> set[str]:
        """Wait until exactly one replica exists and is ready; return its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.CalledProcessError):
                web = self.web()
                ids = {r["id"] for r in web["replicas"]}
                if web["desired"] == 1 and web["ready"] == 1 and len(ids) == 1:
                    return ids
            time.sleep(0.5)
        raise RuntimeError(f"{self.config}: not back to 1 replica within {timeout}s")


class WatchTransport(httpx.AsyncBaseTransport):
    """Wraps the real transport; notes the wall time each replica id first answers."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        )
        self.first_seen: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        now = time.time()
        with contextlib.suppress(ValueError, AttributeError):
            replica = json.loads(body).get("replica")
            if replica is not None:
                with self.lock:
                    self.first_seen.setdefault(str(replica), now)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def new_since(self, known: set[str]) -> tuple[str, float] | None:
        with self.lock:
            fresh = [(t, r) for r, t in self.first_seen.items() if r not in known]
        if not fresh:
            return None
        t, replica = min(fresh)
        return replica, t


def step_plan(target: str, low_s: float, high_s: float) -> LoadPlan:
    low = constant_schedule(LOW_RPS, low_s)
    high = [low_s + t for t in constant_schedule(HIGH_RPS, high_s)]
    return LoadPlan(target=target, path=WORK_PATH, send_times=tuple(low + high))


def ts(event: dict[str, Any]) -> float:
    value = event["ts"]
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def first_event(
    events: list[dict[str, Any]], kind: str, after: float, **match: Any
) -> float | None:
    for event in events:
        data = event.get("data") or {}
        matches = all(data.get(k) == v for k, v in match.items())
        if event["kind"] == kind and ts(event) >= after and matches:
            return ts(event)
    return None


def wait_new(watch: WatchTransport, known: set[str], timeout: float) -> tuple[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = watch.new_since(known)
        if found:
            return found
        time.sleep(0.01)
    raise RuntimeError(f"no new replica answered within {timeout}s")


def auto_repeat(d: Deployment, low_s: float) -> dict[str, float]:
    known = d.settled_at_one()
    watch = WatchTransport()
    plan = step_plan(d.frontend, low_s, high_s=40)
    before = time.time()
    load = run_load_in_thread(plan, transport=watch)
    after = time.time()
    try:
        # run_load takes t0 right after its loop starts: the step is low_s after that
        crossed = (before + after) / 2 + low_s
        replica, serving = wait_new(watch, known, timeout=low_s + 35)
        time.sleep(1)
    finally:
        load.stop()
        report = load.result(timeout=30)
    events = d.events()
    decided = first_event(events, "autoscaled", crossed - 5, direction="up")
    started = first_event(events, "replica_started", crossed - 5, replica=replica)
    ready = first_event(events, "replica_ready", crossed - 5, replica=replica)
    return {
        "serving_s": serving - crossed,
        "decision_s": (decided - crossed) if decided else float("nan"),
        "started_s": (started - crossed) if started else float("nan"),
        "ready_s": (ready - crossed) if ready else float("nan"),
        "step_uncertainty_s": after - before,
        "load_errors": report.errors,
    }


def manual_repeat(d: Deployment, warm_s: float) -> dict[str, float]:
    known = d.settled_at_one()
    watch = WatchTransport()
    plan = LoadPlan(
        target=d.frontend, path=WORK_PATH, send_times=tuple(constant_schedule(HIGH_RPS, 40))
    )
    load = run_load_in_thread(plan, transport=watch)
    try:
        time.sleep(warm_s)
        issued = time.time()
        d.cli("scale", "web", "2")
        returned = time.time()
        replica, serving = wait_new(watch, known, timeout=35)
        time.sleep(1)
    finally:
        load.stop()
        report = load.result(timeout=30)
    events = d.events()
    started = first_event(events, "replica_started", issued - 1, replica=replica)
    ready = first_event(events, "replica_ready", issued - 1, replica=replica)
    d.cli("scale", "web", "1")
    return {
        "serving_s": serving - issued,
        "command_s": returned - issued,
        "started_s": (started - issued) if started else float("nan"),
        "ready_s": (ready - issued) if ready else float("nan"),
        "load_errors": report.errors,
    }


def stats(rows: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in rows if r[key] == r[key]]  # drop NaN
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--low", type=float, default=8.0, help="seconds at 10 rps before the step")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    auto_rows: list[dict[str, float]] = []
    manual_rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="sl-react-") as tmp:
        auto = Deployment(Path(tmp) / "auto", autoscale=True)
        manual = Deployment(Path(tmp) / "manual", autoscale=False)
        up: list[Deployment] = []
        try:
            for d in (auto, manual):
                up.append(d)
                d.cli("up", "--detach")
            for i in range(args.repeats):
                a = auto_repeat(auto, args.low)
                auto_rows.append(a)
                print(f"repeat {i + 1} auto:   {json.dumps(a)}", file=sys.stderr)
                m = manual_repeat(manual, args.low)
                manual_rows.append(m)
                print(f"repeat {i + 1} manual: {json.dumps(m)}", file=sys.stderr)
        finally:
            for d in up:
                d.cli("down", check=False)
    summary = {
        "date": started,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "repeats": len(auto_rows),
        "load": f"{LOW_RPS:g} -> {HIGH_RPS:g} rps of {WORK_PATH}",
        "threshold_rps": TARGET_RPS * (1 + TOLERANCE),
        "autoscale": {
            "crossing_to_serving_s": stats(auto_rows, "serving_s"),
            "crossing_to_autoscaled_event_s": stats(auto_rows, "decision_s"),
            "crossing_to_replica_started_s": stats(auto_rows, "started_s"),
            "crossing_to_replica_ready_event_s": stats(auto_rows, "ready_s"),
            "load_errors": sum(int(r["load_errors"]) for r in auto_rows),
        },
        "manual_baseline": {
            "scale_command_to_serving_s": stats(manual_rows, "serving_s"),
            "scale_command_returns_s": stats(manual_rows, "command_s"),
            "command_to_replica_started_s": stats(manual_rows, "started_s"),
            "command_to_replica_ready_event_s": stats(manual_rows, "ready_s"),
            "load_errors": sum(int(r["load_errors"]) for r in manual_rows),
        },
        "rows": {
            "autoscale": [{k: round(v, 3) for k, v in r.items()} for r in auto_rows],
            "manual": [{k: round(v, 3) for k, v in r.items()} for r in manual_rows],
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
