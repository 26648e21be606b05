"""The autoscaling half of the demo: replay a load ramp and show the replicas follow it.

Run by scripts/demo.sh once examples/autoscale.yaml is up; talks to the
controller's API like the CLI does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from skylift.client import ApiClient
from skylift.config import load_config
from skylift.loadgen import run_load_in_thread, trace_plan

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "autoscale.yaml"
RAMP = REPO / "examples" / "ramp.csv"


def line(api: ApiClient, started: float) -> int:
    web = api.get("/api/v1/services")["services"]["web"]
    auto = web.get("autoscale") or {}
    rps = (auto.get("inputs") or {}).get("rps")
    measured = "  -  " if rps is None else f"{rps:5.1f}"
    print(
        f"  {time.monotonic() - started:5.0f}s  desired {web['desired']}  ready {web['ready']}"
        f"  measured {measured} req/s  {auto.get('last_reason') or ''}",
        flush=True,
    )
    return int(web["desired"])


def main() -> int:
    loaded = load_config(CONFIG)
    frontend = f"http://{loaded.config.services['web'].frontend}"
    plan = trace_plan(frontend, "/work?ms=5", RAMP, peak_rps=150)
    with ApiClient(loaded) as api:
        started, wall_start = time.monotonic(), time.time()
        with run_load_in_thread(plan) as load:
            while load.thread.is_alive():
                line(api, started)
                load.thread.join(3)
        report = load.result()
        print(
            f"load done: {report.sent} sent, {report.ok} ok, {report.errors} errors, "
            f"p95 {report.p95_ms:.1f} ms; waiting for scale-in (15 s stabilization window)"
        )
        deadline = time.monotonic() + 60
        while line(api, started) > 1 and time.monotonic() < deadline:
            time.sleep(3)
        print("scaling decisions:")
        for event in api.get("/api/v1/events", params={"service": "web", "limit": 500})["events"]:
            if event["kind"] == "autoscaled" and event["ts"] >= wall_start:
                print(
                    f"  {time.strftime('%H:%M:%S', time.localtime(event['ts']))}  "
                    f"{event['message']}"
                )
    return 0 if report.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
