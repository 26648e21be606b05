"""CPU the controller spends on autoscaling: 10 services with a policy vs the same without.

Each variant is a real deployment (process backend, demo app, `interval: 1s`)
of 10 services with 1 replica each, under a light open-loop load (5 rps of
``/work?ms=5`` per service, ``skylift.loadgen``):

  autoscale  every service has a policy like examples/autoscale.yaml (rps
             target + p95 threshold, autoscale interval 1s, `resources`), so
             each second the collector reads process stats (psutil), HAProxy
             stats (runtime API) and the request-log socket, and the engine
             decides
  baseline   the same services without `autoscale`: no collector, no log
             socket, no HAProxy request logging

After a warm-up, CPU time (user + system, psutil ``cpu_times``) of the
controller process (``<state_dir>/controller.pid``) is read over ``--duration``
seconds; HAProxy's (master + worker) too, since request logging costs it a
little. Variants alternate (A B B A ...) so drift on a shared machine hits
both.

Run: .venv/bin/python benchmarks/collector_overhead.py [--duration 60 --rounds 2]
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
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skylift.loadgen import LoadHandle, constant_plan, run_load_in_thread  # noqa: E402
from tests.ports import free_port_block  # noqa: E402

SERVICES = 10
POLICY: dict[str, Any] = {
    "min": 1,
    "max": 3,
    "interval": "1s",
    "checks": [
        {"kind": "target", "metric": "rps", "target": 30, "tolerance": "10%", "group": "load"},
        {
            "kind": "threshold",
            "metric": "p95_latency",
            "above": "250ms",
            "for": "4s",
            "change": "+1",
            "group": "load",
        },
    ],
    "behavior": {"up": {"stabilization": "0s"}, "down": {"stabilization": "15s"}},
}


def write_config(root: Path, autoscale: bool) -> Path:
    # one block of consecutive free ports, split up, so no two ranges overlap
    base = free_port_block(SERVICES * 11 + 2)
    services: dict[str, Any] = {}
    for i in range(SERVICES):
        start = base + 2 + SERVICES + 10 * i
        svc: dict[str, Any] = {
            "frontend": f"127.0.0.1:{base + 2 + i}",
            "replicas": 1,
            "backend": {
                "kind": "process",
                "command": f"{sys.executable} {REPO / 'examples/apps/demo_app.py'} "
                "--port {port} --replica {replica}",
                "ports": {"start": start, "end": start + 9},
            },
            "health": {"path": "/healthz", "interval": "500ms", "fall": 2, "rise": 2},
            "resources": {"cpu": "250m", "memory": "128Mi"},
            "slowstart": "1s",
        }
        if autoscale:
            svc["autoscale"] = POLICY
        services[f"s{i}"] = svc
    config = {
        "project": f"collector-{'auto' if autoscale else 'base'}",
        "state_dir": "state",
        "interval": "1s",
        "api": {"listen": f"127.0.0.1:{base}"},
        "haproxy": {"metrics": f"127.0.0.1:{base + 1}"},
        "metrics": {"window": "4s"},
        "services": services,
    }
    root.mkdir(parents=True)
    path = root / "skylift.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "skylift", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=config.parent,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"skylift {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def haproxy_procs(state: Path) -> list[psutil.Process]:
    master = psutil.Process(int((state / "haproxy.pid").read_text().split()[0]))
    return [master, *master.children()]


def run_variant(
    root: Path, autoscale: bool, rps: float, warmup: float, duration: float
) -> dict[str, Any]:
    config = write_config(root, autoscale)
    state = root / "state"
    loads: list[LoadHandle] = []
    try:
        cli(config, "up", "--detach", "--timeout", "120")
        status = json.loads(cli(config, "status", "-o", "json").stdout)
        fronts = [
            f"http://{s['frontend']}"
            for s in yaml.safe_load(config.read_text())["services"].values()
        ]
        for front in fronts:
            plan = constant_plan(front, "/work?ms=5", rps=rps, duration=warmup + duration + 10)
            loads.append(run_load_in_thread(plan))
        time.sleep(warmup)
        controller = psutil.Process(int((state / "controller.pid").read_text()))
        haproxy = haproxy_procs(state)
        c0, h0, w0 = cpu_seconds([controller]), cpu_seconds(haproxy), time.monotonic()
        time.sleep(duration)
        c1, h1, w1 = cpu_seconds([controller]), cpu_seconds(haproxy), time.monotonic()
        events = json.loads(cli(config, "events", "-o", "json", "--limit", "1000").stdout)
    finally:
        for load in loads:
            load.stop()
        reports = [load.result(timeout=30) for load in loads]
        cli(config, "down", check=False)
    wall = w1 - w0
    return {
        "variant": "autoscale" if autoscale else "baseline",
        "services": len(status["services"]),
        "ready": sum(s["ready"] for s in status["services"].values()),
        "wall_s": round(wall, 1),
        "controller_cpu_pct": round(100 * (c1 - c0) / wall, 2),
        "haproxy_cpu_pct": round(100 * (h1 - h0) / wall, 2),
        "requests_ok": sum(r.ok for r in reports),
        "load_errors": sum(r.errors for r in reports),
        "autoscaled_events": sum(1 for e in events["events"] if e["kind"] == "autoscaled"),
        "metrics_failing_events": sum(
            1 for e in events["events"] if e["kind"] == "metrics_source_failing"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rps", type=float, default=5.0, help="per service")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    order: list[bool] = []
    for i in range(args.rounds):
        order += [True, False] if i % 2 == 0 else [False, True]
    runs = []
    with tempfile.TemporaryDirectory(prefix="sl-collector-") as tmp:
        for i, autoscale in enumerate(order):
            run = run_variant(Path(tmp) / f"r{i}", autoscale, args.rps, args.warmup, args.duration)
            runs.append(run)
            print(json.dumps(run), file=sys.stderr)

    def med(variant: str, key: str) -> float:
        return round(float(statistics.median(r[key] for r in runs if r["variant"] == variant)), 2)

    auto_c, base_c = med("autoscale", "controller_cpu_pct"), med("baseline", "controller_cpu_pct")
    auto_h, base_h = med("autoscale", "haproxy_cpu_pct"), med("baseline", "haproxy_cpu_pct")
    summary = {
        "date": started,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "services": SERVICES,
        "rps_per_service": args.rps,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "controller_cpu_pct_of_one_core": {
            "autoscale": auto_c,
            "baseline": base_c,
            "difference": round(auto_c - base_c, 2),
            "ratio": round(auto_c / base_c, 2) if base_c else None,
        },
        "haproxy_cpu_pct_of_one_core": {
            "autoscale": auto_h,
            "baseline": base_h,
            "difference": round(auto_h - base_h, 2),
        },
        "runs": runs,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
