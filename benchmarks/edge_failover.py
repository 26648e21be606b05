"""Region failover and failback through the edge: the time a home region's users wait.

Four regions on loopback, each a real edge HAProxy (rendered by skylift, region
checks ``inter 500ms fall 2 rise 2``) and a stand-in service frontend (the
integration tests' ``standin.py``): us, eu-west, eu-central (same zone, holds
eu-west's standby), asia. A client with an eu-west token calls the ``us``
edge every ``--every`` seconds (open loop, one thread per call).

Each repeat, two kinds of outage of eu-west:
  pool   eu-west's service frontend is killed (its edge stays up and reports
         the region down on its health path);
  edge   eu-west's edge HAProxy is killed (SIGKILL of master and worker:
         the host is gone as far as the other edges can tell).
Measured from the kill: ``failover`` = first answer served by eu-central
(route ``failover``); then the region is restored and ``failback`` = first
answer served by eu-west again. Every other answer must be the documented
503 (counted); any 502, reset or timeout is counted as an error.

Baselines quoted in docs: HAProxy's lab failover with ``inter 1s fall 2``
(1.31 s) and DNS failover (Route 53: 10-30 s checks x 3 plus TTL).

Run: .venv/bin/python benchmarks/edge_failover.py [--repeats 5] [--every 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skylift.edge.runner import Edge  # noqa: E402
from skylift.edge.spec import EdgeSpec, RegionCheck  # noqa: E402
from skylift.regions.rules import RegionFacts, Topology  # noqa: E402
from tests.ports import free_port  # noqa: E402

STANDIN = REPO / "tests" / "integration" / "edge" / "standin.py"
REGIONS = ("us", "eu-west", "eu-central", "asia")
CHECK = RegionCheck(inter=0.5, fall=2, rise=2, timeout=0.5)
TOPOLOGY = Topology(
    regions=(
        RegionFacts("us", "us", frozenset({"US"}), ("eu-west", "eu-central", "asia")),
        RegionFacts("eu-west", "eu", frozenset({"FR"}), ("eu-central", "us", "asia")),
        RegionFacts("eu-central", "eu", frozenset({"DE"}), ("eu-west",), standby_of="eu-west"),
        RegionFacts("asia", "asia", frozenset({"JP"}), ("us",)),
    ),
    default="us",
)


@dataclass(frozen=True)
class Call:
    done: float
    status: int | None
    region: str | None
    documented: bool


def start_standin(region: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), region, "127.0.0.1", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def stop_proc(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(5)
    if proc is not None and proc.stdout is not None:
        proc.stdout.close()


def one_call(url: str, token: str, t0: float) -> Call:
    try:
        with httpx.Client(timeout=5.0) as http:
            r = http.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return Call(time.monotonic() - t0, None, None, False)
    done = time.monotonic() - t0
    if r.status_code == 503:
        ok = r.json().get("error") == "region_unavailable" and "Retry-After" in r.headers
        return Call(done, 503, None, ok)
    region = r.json().get("region") if r.status_code == 200 else None
    return Call(done, r.status_code, region, False)


def until_region(url: str, token: str, region: str, every: float, limit: float) -> dict[str, Any]:
    """Open-loop calls from now until one is served by ``region`` (plus a little after)."""
    t0 = time.monotonic()
    futures: list[Future[Call]] = []
    found: float | None = None
    with ThreadPoolExecutor(max_workers=64) as pool:
        i = 0
        while time.monotonic() - t0 < limit:
            delay = t0 + i * every - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one_call, url, token, t0))
            i += 1
            done = [f.result() for f in futures if f.done()]
            hits = [c.done for c in done if c.region == region]
            if hits:
                found = min(hits)
                break
        calls = [f.result() for f in futures]
    hits = [c.done for c in calls if c.region == region]
    found = min(hits) if hits else None
    return {
        "seconds": found,
        "calls": len(calls),
        "documented_503": sum(1 for c in calls if c.status == 503 and c.documented),
        "errors": sum(
            1 for c in calls if c.status not in (200, 503) or (c.status == 503 and not c.documented)
        ),
    }


def kill_edge(edge: Edge) -> None:
    """SIGKILL the edge's master and workers: no soft stop, like a host that vanished."""
    pid = edge.process.read_pid()
    if pid is None:
        return
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for p in [pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def wait_all_up(edges: dict[str, Edge], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(all(asyncio.run(e.region_health()).values()) for e in edges.values()):
            return
        time.sleep(0.1)
    raise RuntimeError("regions did not all come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=float, default=0.05, help="seconds between calls")
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    now = int(time.time())
    token = jwt.encode(
        {"iss": "skylift-platform/eu-west", "home_region": "eu-west", "exp": now + 3600},
        key,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    root = Path(tempfile.mkdtemp(prefix="skylift-edge-bench-"))
    edge_ports = {r: free_port() for r in REGIONS}
    local_ports = {r: free_port() for r in REGIONS}
    specs = {
        r: EdgeSpec(
            region=r,
            topology=TOPOLOGY,
            listen=f"127.0.0.1:{edge_ports[r]}",
            local=f"127.0.0.1:{local_ports[r]}",
            peers={p: f"127.0.0.1:{edge_ports[p]}" for p in REGIONS if p != r},
            trusted_peers=frozenset({"127.0.0.1"}),
            state_dir=root / r,
            token_keys={"k1": pem},
            check=CHECK,
        )
        for r in REGIONS
    }
    procs = {r: start_standin(r, local_ports[r]) for r in REGIONS}
    edges = {r: Edge(specs[r]) for r in REGIONS}
    url = f"http://{specs['us'].listen}/me"
    results: dict[str, list[dict[str, Any]]] = {"pool": [], "edge": []}
    try:
        for r in REGIONS:
            asyncio.run(edges[r].start())
        wait_all_up(edges)
        for _ in range(args.repeats):
            for kind in ("pool", "edge"):
                if kind == "pool":
                    stop_proc(procs["eu-west"])
                else:
                    kill_edge(edges["eu-west"])
                over = until_region(url, token, "eu-central", args.every, 10.0)
                if kind == "pool":
                    procs["eu-west"] = start_standin("eu-west", local_ports["eu-west"])
                else:
                    edges["eu-west"] = Edge(specs["eu-west"])
                    asyncio.run(edges["eu-west"].start())
                back = until_region(url, token, "eu-west", args.every, 10.0)
                results[kind].append({"failover": over, "failback": back})
                wait_all_up(edges)
    finally:
        for edge in edges.values():
            asyncio.run(edge.stop())
        for proc in procs.values():
            stop_proc(proc)

    def summary(kind: str, phase: str) -> dict[str, Any]:
        runs = results[kind]
        secs = [r[phase]["seconds"] for r in runs if r[phase]["seconds"] is not None]
        return {
            "median_s": round(statistics.median(secs), 3) if secs else None,
            "min_s": round(min(secs), 3) if secs else None,
            "max_s": round(max(secs), 3) if secs else None,
            "documented_503": sum(r[phase]["documented_503"] for r in runs),
            "errors": sum(r[phase]["errors"] for r in runs),
            "calls": sum(r[phase]["calls"] for r in runs),
        }

    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "check": f"inter {CHECK.inter}s fall {CHECK.fall} rise {CHECK.rise}",
        "bound_s": CHECK.fall * CHECK.inter + 1.0,
        "every_s": args.every,
        "repeats": args.repeats,
        "pool_killed": {
            "failover": summary("pool", "failover"),
            "failback": summary("pool", "failback"),
        },
        "edge_killed": {
            "failover": summary("edge", "failover"),
            "failback": summary("edge", "failback"),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
