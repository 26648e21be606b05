"""Cost of latency metrics per HAProxy log line: parse + record, the query, the socket path.

Run: .venv/bin/python benchmarks/metrics_overhead.py [--lines 200000]
Results go into docs/metrics.md by hand (with the machine and the date).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

from skylift.metrics.haproxy_log import parse_line
from skylift.metrics.latency import LatencyTracker, LogSocket
from skylift.metrics.quantiles import SlidingQuantiles


def lines(n: int) -> list[bytes]:
    """Real-shaped lines (RFC 3164 header, as HAProxy 2.6 sends) with varied timers."""
    out = []
    for i in range(n):
        ta = (i * 7919) % 2000
        out.append(
            f"<134>Nov 25 13:03:30 haproxy[19531]: 127.0.0.1:{30000 + i % 30000} "
            f"[25/Nov/2026:13:03:30.210] fe_web be_web/r{i % 8} 0/0/0/{ta}/{ta + 1} 200 1221 "
            f'---- 1/1/0/0/0 0/0 "GET /items/{i} HTTP/1.1"\n'.encode()
        )
    return out


def bench_parse(data: list[bytes]) -> float:
    start = time.perf_counter()
    for line in data:
        parse_line(line)
    return (time.perf_counter() - start) / len(data)


def bench_feed(data: list[bytes]) -> float:
    tracker = LatencyTracker({"be_web": "web"})
    start = time.perf_counter()
    now = 0.0
    for line in data:
        now += 0.0001  # 10k lines/s of simulated time: the ring rotates too
        tracker.feed(line, now)
    return (time.perf_counter() - start) / len(data)


def bench_query(rounds: int = 2000) -> float:
    sketch = SlidingQuantiles()
    for i in range(100_000):
        sketch.record(0.0005 * (1 + i % 4000), now=i * 0.0005)  # spread over many buckets
    start = time.perf_counter()
    for _ in range(rounds):
        sketch.quantile(0.95, now=50.0)
    return (time.perf_counter() - start) / rounds


async def bench_socket(data: list[bytes]) -> tuple[float, int]:
    """Lines/s through a real unix datagram socket into the asyncio receiver."""
    with tempfile.TemporaryDirectory() as tmp:
        tracker = LatencyTracker({"be_web": "web"})
        sock = await LogSocket.open(Path(tmp) / "log.sock", tracker)
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        sent = 0
        start = time.perf_counter()
        try:
            for line in data:
                while True:
                    try:
                        sender.sendto(line, str(sock.path))
                        sent += 1
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0)  # queue full: let the receiver drain it
            while tracker.counters.datagrams < sent:  # noqa: ASYNC110 - same-loop receiver
                await asyncio.sleep(0)
            elapsed = time.perf_counter() - start
        finally:
            sender.close()
            sock.close()
        return sent / elapsed, tracker.counters.requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    data = lines(args.lines)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    print(f"lines: {len(data)}, {sum(map(len, data)) / len(data):.0f} bytes each")
    parse = min(bench_parse(data) for _ in range(3))
    feed = min(bench_feed(data) for _ in range(3))
    query = bench_query()
    rate, received = asyncio.run(bench_socket(data))
    print(f"parse only:          {parse * 1e6:6.2f} us/line  {1 / parse:10,.0f} lines/s")
    print(f"parse + record:      {feed * 1e6:6.2f} us/line  {1 / feed:10,.0f} lines/s")
    print(f"p95 query:           {query * 1e6:6.2f} us (over {SlidingQuantiles().buckets} buckets)")
    print(f"unix socket -> p95:  {rate:10,.0f} lines/s ({received} recorded)")


if __name__ == "__main__":
    main()
