"""Does request logging (what autoscaling turns on) slow requests through HAProxy?

Two HAProxy instances from skylift's own renderer (``HAProxyBalancer``), one
server each, in front of the same backend process:

  nolog  no ``log`` lines (a deployment without autoscale)
  log    ``log ring@skylift_log`` + skylift's ``log-format`` + ``dontlognull``:
         one line per request, forwarded by the ring over a unix stream socket
         to skylift's receiver
         (``LogSocket`` + ``LatencyTracker``, the controller's code) running in
         its own process, as the controller does

Rounds are interleaved (nolog, log, nolog, log ...). Load: ``wrk -t2 -c32
--latency`` (closed loop). Also reported: the receiver's CPU time per log
line (what the collector adds per request) and HAProxy's ``DroppedLogs``.

Backends: ``demo`` (examples/apps/demo_app.py, HTTP/1.0) and ``asyncio`` (a
minimal keep-alive server, so HAProxy's own per-request cost is visible).

Run: .venv/bin/python benchmarks/log_latency.py [--backend demo|asyncio|both]
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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skylift.config import HAProxySettings, HealthCheck, ProcessBackend, Service  # noqa: E402
from skylift.lb import HAProxyBalancer, ServerState  # noqa: E402
from skylift.logs import configure_logging  # noqa: E402
from skylift.model import Replica  # noqa: E402
from tests.ports import free_port  # noqa: E402

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

# skylift's receiver in its own process, like the controller; prints its counters
# on SIGUSR1 and on SIGTERM (then exits).
RECEIVER = r"""
import asyncio, json, signal, sys
from pathlib import Path
from skylift.metrics.latency import LatencyTracker, LogSocket
async def main():
    tracker = LatencyTracker({"be_bench": "bench"})
    sock = await LogSocket.open(Path(sys.argv[1]), tracker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    def report():
        c = tracker.counters
        print(json.dumps({"lines": c.lines, "requests": c.requests}), flush=True)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, report)
    print("ready", flush=True)
    await stop.wait()
    sock.close()
    report()
asyncio.run(main())
"""


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def find(pattern: str) -> str:
        match = re.search(pattern, out)
        if not match:
            raise ValueError(f"wrk output without {pattern!r}:\n{out}")
        return match.group(1)

    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return {
        "rps": float(find(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(find(r"\s50%\s+(\S+)")),
        "p99_ms": _ms(find(r"\s99%\s+(\S+)")),
        "requests": int(find(r"(\d+) requests in")),
        "errors": errors,
    }


def start_app(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "demo":
        cmd = [sys.executable, str(REPO / "examples/apps/demo_app.py"), "--port", str(port)]
    else:
        cmd = [sys.executable, "-c", ASYNCIO_SERVER, str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_receiver(sock_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(sock_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "haproxy (unknown version)"


async def wait_http(url: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {within}s")
            await asyncio.sleep(0.05)


async def start_lb(state: Path, port: int, log_socket: Path | None) -> tuple[HAProxyBalancer, str]:
    front = free_port()
    lb = HAProxyBalancer(
        state, HAProxySettings(metrics=f"127.0.0.1:{free_port()}", maxconn=4096), log_socket
    )
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
    return lb, f"http://127.0.0.1:{front}/"


def receiver_lines(receiver: subprocess.Popen[str]) -> int:
    assert receiver.stdout is not None
    receiver.send_signal(signal.SIGUSR1)
    return int(json.loads(receiver.stdout.readline())["requests"])


async def dropped_logs(lb: HAProxyBalancer) -> int:
    info = await lb.runtime.command("show info")
    match = re.search(r"^DroppedLogs:\s*(\d+)", info, re.MULTILINE)
    return int(match.group(1)) if match else -1


async def bench_backend(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    app = start_app(kind, port)
    root = Path(tempfile.mkdtemp(prefix="sl-loglat-"))
    sock_path = root / "log.sock"
    receiver = start_receiver(sock_path)
    lbs: list[HAProxyBalancer] = []
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("log receiver did not start")
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        nolog, nolog_url = await start_lb(root / "nolog", port, None)
        lbs.append(nolog)
        logged, log_url = await start_lb(root / "log", port, sock_path)
        lbs.append(logged)
        recv = psutil.Process(receiver.pid)
        for url in (nolog_url, log_url):  # warm-up
            await asyncio.to_thread(run_wrk, url, args.connections, 1)
        rounds: dict[str, list[dict[str, float]]] = {"nolog": [], "log": []}
        recv_cpu = 0.0
        log_requests = 0
        lines = 0
        dropped0 = await dropped_logs(logged)
        for _ in range(args.rounds):
            rounds["nolog"].append(
                await asyncio.to_thread(run_wrk, nolog_url, args.connections, args.duration)
            )
            await asyncio.sleep(0.5)  # the receiver finishes its queue
            lines0, cpu0 = receiver_lines(receiver), sum(recv.cpu_times()[:2])
            result = await asyncio.to_thread(run_wrk, log_url, args.connections, args.duration)
            await asyncio.sleep(0.5)
            recv_cpu += sum(recv.cpu_times()[:2]) - cpu0
            lines += receiver_lines(receiver) - lines0
            log_requests += int(result["requests"])
            rounds["log"].append(result)
        dropped = await dropped_logs(logged) - dropped0
    finally:
        for lb in lbs:
            await lb.stop()
        receiver.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            receiver.communicate(timeout=10)
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
        app.terminate()
        app.wait(10)
        shutil.rmtree(root, ignore_errors=True)

    def med(rows: list[dict[str, float]]) -> dict[str, float]:
        return {
            "rps": round(statistics.median(r["rps"] for r in rows), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rows), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rows), 3),
            "errors": sum(int(r["errors"]) for r in rows),
        }

    n, lg = med(rounds["nolog"]), med(rounds["log"])
    return {
        "backend": kind,
        "nolog": n,
        "log": lg,
        "rps_ratio": round(lg["rps"] / n["rps"], 3),
        "p50_ratio": round(lg["p50_ms"] / n["p50_ms"], 3),
        "p99_ratio": round(lg["p99_ms"] / n["p99_ms"], 3),
        "rounds": rounds,
        "log_requests_sent": log_requests,
        "log_lines_received": lines,
        "dropped_logs": dropped,
        "receiver_cpu_s": round(recv_cpu, 3),
        "receiver_us_per_line": round(1e6 * recv_cpu / lines, 2) if lines else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["demo", "asyncio", "both"], default="both")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning")  # logs to stderr: stdout is the JSON summary
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    kinds = ["demo", "asyncio"] if args.backend == "both" else [args.backend]
    results = [await bench_backend(kind, args) for kind in kinds]
    print(
        json.dumps(
            {
                "date": started,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "load_avg_end": [round(x, 2) for x in os.getloadavg()],
                "haproxy": haproxy_version(),
                "tool": f"wrk -t2 -c{args.connections} --latency",
                "duration_s": args.duration,
                "rounds": args.rounds,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
