"""How long from `skylift scale` to the new replica answering through HAProxy?

Drives the real CLI against a real controller (process backend, demo app):
scale 1 -> 2 -> ... -> N+1 and, for each step, time from issuing the command
to the first response from the new replica at the frontend. The command's own
cost (a CLI process start) is measured in the same run as the baseline, so the
controller's share is the difference.

Backends: process (the demo app), docker and swarm (the busybox demo image,
built by examples/images/build-busybox-demo.sh; swarm needs `docker swarm
init`), measured one after the other in the same run.

Run: .venv/bin/python benchmarks/scale_to_serving.py [--steps 5] [--backends process,docker,swarm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.ports import free_port, free_port_block  # noqa: E402


def skylift(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skylift", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


IMAGE = "skylift-demo/busybox:1"


def backend_block(kind: str, start: int) -> dict[str, object]:
    if kind == "process":
        return {
            "command": f"{sys.executable} {REPO / 'examples/apps/demo_app.py'} "
            "--port {port} --replica {replica}",
            "ports": {"start": start, "end": start + 29},
        }
    return {"kind": kind, "image": IMAGE, "port": 8080}


def write_config(root: Path, kind: str) -> tuple[Path, str]:
    frontend = f"127.0.0.1:{free_port()}"
    start = free_port_block(30)
    config = {
        "project": f"bench-{kind}",
        "state_dir": "state",
        "interval": "500ms",
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "haproxy": {"metrics": f"127.0.0.1:{free_port()}"},
        "services": {
            "web": {
                "frontend": frontend,
                "replicas": 1,
                "backend": backend_block(kind, start),
                "health": {"path": "/healthz", "interval": "500ms", "rise": 2, "fall": 2},
                "slowstart": "1s",
            }
        },
    }
    path = root / "skylift.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, frontend


def replicas_seen(client: httpx.Client, frontend: str, kind: str, tries: int = 12) -> set[str]:
    """Replica ids answering at the frontend (the demo app's JSON, busybox's /replica)."""
    seen = set()
    for _ in range(tries):
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            if kind == "process":
                seen.add(client.get(f"http://{frontend}/").json()["replica"])
            else:
                seen.add(client.get(f"http://{frontend}/replica").text.strip())
    return seen


def measure(kind: str, steps: int) -> dict[str, object]:
    """Scale one backend 1 -> steps+1 and time each step to the new replica serving."""
    with tempfile.TemporaryDirectory() as tmp:
        config, frontend = write_config(Path(tmp), kind)
        skylift(config, "up", "--detach")
        results = []
        try:
            with httpx.Client(trust_env=False, timeout=2) as client:
                for step in range(steps):
                    status = json.loads(skylift(config, "status", "-o", "json").stdout)
                    known = {r["id"] for r in status["services"]["web"]["replicas"]}
                    started = time.perf_counter()
                    skylift(config, "scale", "web", str(len(known) + 1))
                    command_done = time.perf_counter()
                    deadline = started + 60
                    while time.perf_counter() < deadline:
                        if replicas_seen(client, frontend, kind, tries=4) - known:
                            break
                        time.sleep(0.02)
                    serving = time.perf_counter()
                    results.append((command_done - started, serving - started))
                    print(
                        f"{kind} step {step + 1}: command {command_done - started:.2f}s, "
                        f"new replica serving after {serving - started:.2f}s",
                        file=sys.stderr,
                    )
        finally:
            skylift(config, "down")
    commands = [c for c, _ in results]
    serving = [s for _, s in results]
    return {
        "backend": kind,
        "steps": len(results),
        "command_median_s": round(statistics.median(commands), 2),
        "serving_median_s": round(statistics.median(serving), 2),
        "serving_min_s": round(min(serving), 2),
        "serving_max_s": round(max(serving), 2),
        "controller_share_median_s": round(
            statistics.median(serving) - statistics.median(commands), 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backends", default="process")
    args = parser.parse_args()
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "results": [measure(kind, args.steps) for kind in args.backends.split(",")],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
