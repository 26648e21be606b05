"""What does HAProxy cost? Requests/s and latency through it vs straight to one replica.

Both paths are measured in the same run, interleaved (direct, haproxy, direct,
haproxy ...), against the same backend process, so the ratios compare like
with like on a noisy machine. Load comes from ``wrk`` when installed
(``apt-get install -y wrk``), otherwise from a bounded-concurrency httpx client.

Backends:
  demo     examples/apps/demo_app.py (stdlib, HTTP/1.0: a connection per request)
  asyncio  a minimal keep-alive HTTP/1.1 server, to expose HAProxy's own cost

Run: .venv/bin/python benchmarks/haproxy_overhead.py [--backend demo|asyncio|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skylift.config import HAProxySettings, HealthCheck, ProcessBackend, Service  # noqa: E402
from skylift.lb import HAProxyBalancer, ServerState  # noqa: E402
from skylift.model import Replica  # noqa: E402

ASYNCIO_SERVER = r"""
import asyncio, sys
BODY = b'{"replica":"bench"}'
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(RESP)
            await writer.drain()
            if b"connection: close" in head.lower():
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


@dataclass
class Result:
    path: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, connections: int, duration: float) -> tuple[float, float, float, int]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return rps, p50, p99, errors


async def run_httpx(url: str, connections: int, duration: float) -> tuple[float, float, float, int]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    reply = await client.get(url)
                    if reply.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49], q[98], errors


async def measure(url: str, label: str, args: argparse.Namespace) -> Result:
    if shutil.which("wrk") and not args.httpx:
        rps, p50, p99, errors = await asyncio.to_thread(
            run_wrk, url, args.connections, args.duration
        )
    else:
        rps, p50, p99, errors = await run_httpx(url, args.connections, args.duration)
    return Result(label, rps, p50, p99, errors)


async def wait_http(url: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {within}s")
            await asyncio.sleep(0.05)


def start_app(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "demo":
        cmd = [sys.executable, str(REPO / "examples/apps/demo_app.py"), "--port", str(port)]
        if not Path(cmd[1]).exists():
            raise SystemExit("examples/apps/demo_app.py is missing: use --backend asyncio")
    else:
        cmd = [sys.executable, "-c", ASYNCIO_SERVER, str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "haproxy (unknown version)"


async def bench_backend(kind: str, args: argparse.Namespace) -> dict[str, object]:
    port, front = free_port(), free_port()
    app = start_app(kind, port)
    state = Path(tempfile.mkdtemp(prefix="sl-bench-"))
    lb = HAProxyBalancer(
        state / "state", HAProxySettings(metrics=f"127.0.0.1:{free_port()}", maxconn=4096)
    )
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        service = Service(
            frontend=f"127.0.0.1:{front}",
            backend=ProcessBackend(command="bench {port}"),
            health=HealthCheck(path="/healthz", interval=2.0),
            slowstart=0.0,
        )
        replica = Replica(id="bench-1", service="bench", host="127.0.0.1", port=port)
        await lb.start({"bench": service}, {"bench": [replica]})
        deadline = time.monotonic() + 10
        while (await lb.status("bench"))["bench-1"].state is not ServerState.UP:
            if time.monotonic() > deadline:
                raise RuntimeError("replica never came UP in HAProxy")
            await asyncio.sleep(0.05)
        direct_url, lb_url = f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{front}/"
        await measure(direct_url, "warmup", argparse.Namespace(**{**vars(args), "duration": 1}))
        direct: list[Result] = []
        proxied: list[Result] = []
        for _ in range(args.rounds):
            direct.append(await measure(direct_url, "direct", args))
            proxied.append(await measure(lb_url, "haproxy", args))
    finally:
        await lb.stop()
        app.terminate()
        app.wait(10)
        shutil.rmtree(state, ignore_errors=True)

    def med(results: list[Result], label: str) -> Result:
        return Result(
            label,
            statistics.median(r.rps for r in results),
            statistics.median(r.p50_ms for r in results),
            statistics.median(r.p99_ms for r in results),
            sum(r.errors for r in results),
        )

    d, h = med(direct, "direct"), med(proxied, "haproxy")
    return {
        "backend": kind,
        "direct": asdict(d),
        "haproxy": asdict(h),
        "rps_ratio": round(h.rps / d.rps, 3),
        "p50_ratio": round(h.p50_ms / d.p50_ms, 3),
        "p99_ratio": round(h.p99_ms / d.p99_ms, 3),
    }


def markdown(report: dict[str, object]) -> str:
    rows = [
        "| backend | path | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ratios = []
    for item in report["results"]:  # type: ignore[attr-defined]
        for key in ("direct", "haproxy"):
            r = item[key]
            rows.append(
                f"| {item['backend']} | {key} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['errors']} |"
            )
        ratios.append(
            f"- {item['backend']}: haproxy/direct req/s {item['rps_ratio']}, "
            f"p50 {item['p50_ratio']}x, p99 {item['p99_ratio']}x"
        )
    return "\n".join([*rows, "", *ratios])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["demo", "asyncio", "both"], default="both")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--httpx", action="store_true", help="use httpx even if wrk exists")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args()
    kinds = ["demo", "asyncio"] if args.backend == "both" else [args.backend]
    results = [await bench_backend(kind, args) for kind in kinds]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "haproxy": haproxy_version(),
        "tool": "wrk -t2" if shutil.which("wrk") and not args.httpx else "httpx",
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{report['date']} — {report['machine']}; {report['haproxy']}; "
            f"{report['tool']} -c{args.connections}, {args.duration:g}s x {args.rounds} rounds "
            "(medians)\n"
        )
        print(markdown(report))


if __name__ == "__main__":
    asyncio.run(main())
