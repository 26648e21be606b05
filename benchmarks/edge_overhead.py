"""What does the edge cost per request? Token check + map lookups vs a plain HAProxy forward.

Two HAProxy processes run side by side in the same run, in front of the same
keep-alive backend (a minimal asyncio HTTP/1.1 server):
  plain  skylift.lb's rendered config: one frontend, one backend, one server
  edge   skylift.edge's rendered config for a region (4-region topology,
         2 pinned kids, extra CIDR map, latency mode), serving its own pool

Three request kinds, interleaved in rounds (plain, edge anonymous, edge with
a valid ES256 token whose home is the edge's own region, ...):
  - latency on one keep-alive connection (unsaturated): p50 / p99, ms
  - HAProxy CPU per request: the worker's utime+stime (``/proc``) over the
    round divided by the requests it served, microseconds; the edge's idle
    health checks are measured over an idle period and subtracted.
The ratio edge / plain is reported for both (the lower-noise figure is CPU).

Run: .venv/bin/python benchmarks/edge_overhead.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
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

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skylift.edge.runner import Edge  # noqa: E402
from skylift.edge.spec import EdgeSpec  # noqa: E402
from skylift.lb.process import HAProxyProcess  # noqa: E402
from skylift.lb.render import HAProxySpec, ServerSpec, ServiceSpec, render_config  # noqa: E402
from skylift.regions.rules import RegionFacts, Topology  # noqa: E402
from tests.ports import free_port  # noqa: E402

SERVER = r"""
import asyncio, sys
BODY = b'{"region":"us"}'
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(RESP)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

TOPOLOGY = Topology(
    regions=(
        RegionFacts("us", "us", frozenset({"US"}), ("eu-west", "eu-central", "asia")),
        RegionFacts("eu-west", "eu", frozenset({"FR"}), ("eu-central", "us", "asia")),
        RegionFacts("eu-central", "eu", frozenset({"DE"}), ("eu-west",), standby_of="eu-west"),
        RegionFacts("asia", "asia", frozenset({"JP"}), ("us",)),
    ),
    default="us",
    mode="latency",
)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (clock ticks)


async def worker_pid(process: HAProxyProcess) -> int:
    info = await process.show_proc()
    return info.workers[0][0]


def run_round(url: str, headers: dict[str, str], n: int, pid: int) -> tuple[list[float], float]:
    """n sequential requests on one keep-alive connection: latencies (ms), CPU us/request."""
    lat: list[float] = []
    with httpx.Client(timeout=5.0) as http:
        http.get(url, headers=headers)  # open the connection
        before = cpu_ticks(pid)
        for _ in range(n):
            t0 = time.perf_counter()
            r = http.get(url, headers=headers)
            lat.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: {r.status_code} {r.text[:100]}")
        after = cpu_ticks(pid)
    tick = os.sysconf("SC_CLK_TCK")
    return lat, (after - before) / tick * 1e6 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="skylift-edge-overhead-"))
    backend_port, plain_port, edge_port = free_port(), free_port(), free_port()
    peers = {r: f"127.0.0.1:{free_port()}" for r in TOPOLOGY.names if r != "us"}
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())

    def pem(k: ec.EllipticCurvePrivateKey) -> str:
        return (
            k.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    token = jwt.encode(
        {"iss": "skylift-platform/us", "home_region": "us", "exp": int(time.time()) + 3600},
        key,
        algorithm="ES256",
        headers={"kid": "k2"},
    )
    spec = EdgeSpec(
        region="us",
        topology=TOPOLOGY,
        listen=f"127.0.0.1:{edge_port}",
        local=f"127.0.0.1:{backend_port}",
        peers=peers,  # nobody listens: the peers are down, the own region serves
        trusted_peers=frozenset({"10.9.9.9"}),
        state_dir=root / "edge",
        token_keys={"k1": pem(other), "k2": pem(key)},
        extra_countries={"10.0.0.0/8": "DE", "192.168.0.0/16": "FR"},
    )
    plain_spec = HAProxySpec(
        state_dir=str(root / "plain"),
        metrics_bind=f"127.0.0.1:{free_port()}",
        services=(
            ServiceSpec(
                "web",
                f"127.0.0.1:{plain_port}",
                servers=(ServerSpec("s1", f"127.0.0.1:{backend_port}"),),
            ),
        ),
    )
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(backend_port)], stdout=subprocess.PIPE
    )
    assert server.stdout is not None
    server.stdout.readline()
    edge = Edge(spec)
    plain = HAProxyProcess(root / "plain")
    rows: dict[str, dict[str, list[float]]] = {
        k: {"lat": [], "cpu": []} for k in ("plain", "edge_anonymous", "edge_token")
    }
    try:
        asyncio.run(edge.start())
        asyncio.run(plain.start(render_config(plain_spec)))
        edge_pid = asyncio.run(worker_pid(edge.process))
        plain_pid = asyncio.run(worker_pid(plain))
        time.sleep(2.0)  # let the edge mark its (absent) peers down
        # the edge's idle cost (its health checks) over a fixed period
        t0, c0 = time.monotonic(), cpu_ticks(edge_pid)
        time.sleep(3.0)
        idle_us_per_s = (
            (cpu_ticks(edge_pid) - c0) / os.sysconf("SC_CLK_TCK") * 1e6 / (time.monotonic() - t0)
        )
        kinds = [
            ("plain", f"http://127.0.0.1:{plain_port}/", {}, plain_pid, 0.0),
            ("edge_anonymous", f"http://{spec.listen}/", {}, edge_pid, idle_us_per_s),
            (
                "edge_token",
                f"http://{spec.listen}/",
                {"Authorization": f"Bearer {token}"},
                edge_pid,
                idle_us_per_s,
            ),
        ]
        for _ in range(args.rounds):
            for name, url, headers, pid, idle in kinds:
                t0 = time.monotonic()
                lat, cpu = run_round(url, headers, args.requests, pid)
                elapsed = time.monotonic() - t0
                rows[name]["lat"] += lat
                rows[name]["cpu"].append(max(0.0, cpu - idle * elapsed / args.requests))
    finally:
        asyncio.run(edge.stop())
        asyncio.run(plain.stop())
        server.kill()
        server.wait(5)
        server.stdout.close()

    def summary(name: str) -> dict[str, float]:
        q = statistics.quantiles(rows[name]["lat"], n=100)
        return {
            "p50_ms": round(q[49], 3),
            "p99_ms": round(q[98], 3),
            "cpu_us_per_request": round(statistics.median(rows[name]["cpu"]), 1),
        }

    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "edge_idle_cpu_us_per_s": round(idle_us_per_s, 1),
    }
    plain_s = summary("plain")
    out["plain"] = plain_s
    for name in ("edge_anonymous", "edge_token"):
        s = summary(name)
        s["p50_ratio"] = round(s["p50_ms"] / plain_s["p50_ms"], 2)
        if plain_s["cpu_us_per_request"] > 0:
            s["cpu_ratio"] = round(s["cpu_us_per_request"] / plain_s["cpu_us_per_request"], 2)
        out[name] = s
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
