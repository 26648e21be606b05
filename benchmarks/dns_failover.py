"""DNS failover time of the geo-DNS front: how long German clients keep the dead region's edge.

The geo-DNS tests' world (``tests/integration/dns/geodns_world.py``): four regions on
loopback, each a real edge HAProxy (``edge.check`` defaults: every 0.5 s, 2 failures) in
front of a stand-in service, and ``skylift dns serve`` running a real PowerDNS (geoip
backend) with the front's default checks (every 1 s, 2 failures, 1 s timeout; ``--interval``) and
``dns.ttl`` = ``--ttl``. German clients' home is eu-west.

Each repeat, two kinds of outage of eu-west:
  pool   its service stand-in is killed: its edge stays up and turns its
         ``/_skylift/region-health`` to 503 after its own checks (fall x inter)
  edge   its edge HAProxy is SIGKILLed (master and workers): the check is refused at once
Measured from the kill:
  authoritative   PowerDNS answers eu-central for a German subnet (ECS query every 10 ms)
  front           from dns.json: first failed check -> reload done, the rewrite, the reload
  clients         ``--clients`` caching stub resolvers (dnspython, honouring the TTL) that
                  each resolved at a random moment of the TTL before the kill, polling every
                  50 ms: when each first gets eu-central; the worst is about authoritative + TTL
The kill comes at a random phase of the front's check interval.
Then the region is restored and failback (authoritative) is timed the same way.

Run: .venv/bin/python benchmarks/dns_failover.py [--repeats 3] [--ttl 5] [--clients 8]
     [--interval 1.0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.resolver

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration" / "dns"))

from geodns_world import GeoWorld, start_world  # noqa: E402

from skylift.edge.runner import Edge  # noqa: E402
from tests.geodns_config import CLIENTS, ZONE  # noqa: E402

NAME = f"www.{ZONE}"


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


def wait_region(world: GeoWorld, region: str, timeout: float, every: float = 0.01) -> float:
    """Seconds until PowerDNS answers ``region`` for the German subnet (monotonic time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(dns.exception.DNSException, OSError):
            if world.region_for(CLIENTS["DE"]) == region:
                return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"PowerDNS never answered {region} for DE within {timeout}s")


class StubClient(threading.Thread):
    """A client behind a caching resolver: resolves every 50 ms, the cache honours the TTL."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = ["127.0.0.1"]
        self.resolver.port = port
        self.resolver.cache = dns.resolver.Cache()
        self.resolver.use_edns(0, options=[dns.edns.ECSOption(CLIENTS["DE"], 24)])
        self.resolver.lifetime = 2.0
        self.stop = stop
        self.switched: float | None = None

    def current(self) -> str:
        answer = self.resolver.resolve(NAME, "A")
        return str(answer.canonical_name).split(".")[0]

    def run(self) -> None:
        while not self.stop.is_set() and self.switched is None:
            with contextlib.suppress(dns.exception.DNSException):
                if self.current() == "eu-central":
                    self.switched = time.monotonic()
            time.sleep(0.05)


def outage(
    world: GeoWorld, kind: str, ttl: int, clients: int, bound: float, interval: float
) -> dict[str, Any]:
    stop = threading.Event()
    stubs = [StubClient(world.port, stop) for _ in range(clients)]
    # each stub caches its answer at a random moment of the TTL before the kill
    delays = sorted(random.uniform(0, ttl) for _ in stubs)
    started = time.monotonic()
    for stub, at in zip(stubs, delays, strict=True):
        time.sleep(max(0.0, started + at - time.monotonic()))
        assert stub.current() == "eu-west"
    # the kill at a random phase of the front's checks (else it locks to them: failback is
    # seen right after a check, and the TTL is a whole number of check intervals)
    time.sleep(max(0.0, started + ttl - time.monotonic()) + random.uniform(0, interval))
    for stub in stubs:
        stub.start()
    t0 = time.monotonic()
    if kind == "pool":
        world.standins["eu-west"].kill()
    else:
        kill_edge(world.edge_runners["eu-west"])
    try:
        authoritative = wait_region(world, "eu-central", bound) - t0
        deadline = time.monotonic() + ttl + bound
        while time.monotonic() < deadline and any(s.switched is None for s in stubs):
            time.sleep(0.05)
        seen = [s.switched - t0 for s in stubs if s.switched is not None]
        change = world.state()["changes"][-1]  # type: ignore[index]
    finally:
        stop.set()
        if kind == "pool":
            world.standins["eu-west"].start()
        else:
            import asyncio

            asyncio.run(world.edge_runners["eu-west"].start())
    t1 = time.monotonic()
    failback = wait_region(world, "eu-west", bound + 5) - t1
    return {
        "kind": kind,
        "authoritative_s": round(authoritative, 3),
        "front_since_first_failed_check_s": change["since_first_check_s"],
        "rewrite_s": change["rewrite_s"],
        "reload_s": change["reload_s"],
        "clients_s": sorted(round(s, 3) for s in seen),
        "clients_missing": clients - len(seen),
        "failback_s": round(failback, 3),
    }


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3g} s ({min(values):.3g}-{max(values):.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--interval", type=float, default=1.0, help="dns.check.interval (s)")
    args = parser.parse_args()
    # dns.check: the defaults but for the interval (timeout at most the interval)
    front_check = {
        "interval": args.interval,
        "fall": 2,
        "rise": 2,
        "timeout": min(1.0, args.interval),
    }
    random.seed(14)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dnsbench-") as tmp:
        worlds = start_world(Path(tmp), ttl=args.ttl, check=front_check)
        world = next(worlds)
        try:
            for i in range(args.repeats):
                for kind in ("pool", "edge"):
                    result = outage(world, kind, args.ttl, args.clients, 20.0, args.interval)
                    print(json.dumps({"repeat": i, **result}), file=sys.stderr)
                    results.append(result)
        finally:
            worlds.close()
    load = os.getloadavg()[0]
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {os.cpu_count()} cpus, "
                f"{platform.python_version()}, load {load:.2f}",
                "date": time.strftime("%Y-%m-%d"),
                "ttl": args.ttl,
                "front_check": front_check,
                "results": results,
            },
            indent=2,
        )
    )
    for kind in ("pool", "edge"):
        rows = [r for r in results if r["kind"] == kind]
        worst = [max(r["clients_s"]) for r in rows if r["clients_s"]]
        print(
            f"{kind}: authoritative {summary([r['authoritative_s'] for r in rows])}; "
            f"front {summary([r['front_since_first_failed_check_s'] for r in rows])} "
            f"(rewrite {summary([r['rewrite_s'] for r in rows])}, "
            f"reload {summary([r['reload_s'] for r in rows])}); "
            f"worst client {summary(worst)}; failback {summary([r['failback_s'] for r in rows])}"
        )


if __name__ == "__main__":
    main()
