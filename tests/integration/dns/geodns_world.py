"""Four regions on loopback, each a real edge HAProxy (rendered from the config) in front of a
stand-in service, and `skylift dns serve` running a real PowerDNS (geoip backend) on a free
loopback port. An outage is a region's stand-in killed: its edge's region-health turns 503.
Every process started here is stopped in the fixture's finally (PowerDNS by its PID too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx

from skylift.config import load_config
from skylift.edge.geoip import build_map
from skylift.edge.runner import Edge
from skylift.regions.config import edge_spec
from tests.fixtures.region_process import RegionProcess
from tests.geodns_config import REGIONS, SOURCE_CSV, ZONE, write_config
from tests.polling import wait_for
from tests.ports import free_port, free_port_block

STANDIN = Path(__file__).parents[1] / "edge" / "standin.py"
SKYLIFT = Path(sys.executable).with_name("skylift")


def dns_port() -> int:
    """A loopback port free for UDP as well as TCP (PowerDNS takes both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


@dataclass(frozen=True)
class Answer:
    rcode: str
    cname: str | None
    addresses: tuple[str, ...]
    ttl: int | None


class Standin(RegionProcess):
    script = STANDIN


@dataclass
class GeoWorld:
    config: Path
    port: int
    edges: dict[str, str]  # region -> edge listen
    standins: dict[str, Standin]
    serve: subprocess.Popen[bytes]
    edge_runners: dict[str, Edge]

    def ask(self, client: str | None, rtype: str = "A", name: str = f"www.{ZONE}") -> Answer:
        """A query as a resolver sends it for a client in ``client``'s subnet (ECS)."""
        query = dns.message.make_query(name, rtype)
        if client is not None:
            prefix = 56 if ":" in client else 24
            query.use_edns(0, options=[dns.edns.ECSOption(client, prefix)])
        for attempt in range(3):  # a resolver retries a lost or late UDP answer too
            try:
                response = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=2.0)
                break
            except dns.exception.Timeout:
                if attempt == 2:
                    raise
        cname = next(
            (str(r[0].target) for r in response.answer if r.rdtype == dns.rdatatype.CNAME), None
        )
        addresses = tuple(
            sorted(
                item.address
                for r in response.answer
                if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                for item in r
            )
        )
        ttl = min((r.ttl for r in response.answer), default=None)
        return Answer(dns.rcode.to_text(response.rcode()), cname, addresses, ttl)

    def region_for(self, client: str | None) -> str | None:
        cname = self.ask(client).cname
        return cname.split(".")[0] if cname else None

    def state(self) -> dict[str, object]:
        path = self.config.parent / "state" / "dns" / "dns.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}

    def region_healthy(self, region: str) -> bool:
        try:
            r = httpx.get(f"http://{self.edges[region]}/_skylift/region-health", timeout=1.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200


def _pdns_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_world(
    root: Path, *, ttl: int = 5, check: dict[str, Any] | None = None
) -> Iterator[GeoWorld]:
    """The world in ``root``; ``ttl`` and ``check`` (the front's) go into its config."""
    (root / "geo.csv").write_text(SOURCE_CSV)
    build_map(root / "geo.csv", root / "geoip.map")  # what `skylift geoip update` writes
    frontend = free_port_block(31)  # each region's frontend: + its port_offset (10 x i)
    edge_ports = {r: free_port() for r in REGIONS}
    port = dns_port()
    config = write_config(
        root, edge_ports=edge_ports, frontend_port=frontend, dns_port=port, ttl=ttl, check=check
    )
    data = load_config(config)  # edges check every 0.5 s, 2 failures: the edge.check defaults
    standins = {r: Standin(r, frontend + 10 * i) for i, r in enumerate(REGIONS)}
    edges = {r: Edge(edge_spec(data.config, r, root)) for r in REGIONS}
    started: list[Edge] = []
    serve: subprocess.Popen[bytes] | None = None
    log = (root / "serve.log").open("wb")
    try:
        for standin in standins.values():
            standin.start()
        for edge in edges.values():
            asyncio.run(edge.start())
            started.append(edge)
        listens = {r: f"127.0.0.1:{edge_ports[r]}" for r in REGIONS}
        serve = subprocess.Popen(
            [str(SKYLIFT), "dns", "serve", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        world = GeoWorld(config, port, listens, standins, serve, edges)
        for region in REGIONS:
            wait_for(lambda r=region: world.region_healthy(r), 10, f"{region}'s edge healthy")
        wait_for(lambda: _answers(world), 20, "PowerDNS answering (see serve.log)", every=0.1)
        yield world
    finally:
        if serve is not None:
            pdns_pid = world_pdns_pid(root)
            if serve.poll() is None:
                serve.send_signal(signal.SIGTERM)
                try:
                    serve.wait(15)
                except subprocess.TimeoutExpired:
                    serve.kill()
                    serve.wait(5)
            if pdns_pid is not None and _pdns_alive(pdns_pid):
                os.kill(pdns_pid, signal.SIGKILL)  # the PowerDNS this world started, by PID
        log.close()
        for edge in started:
            asyncio.run(edge.stop())
        for standin in standins.values():
            standin.kill()


def world_pdns_pid(root: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((root / "state" / "dns" / "pdns.pid").read_text())
    return None


def _answers(world: GeoWorld) -> bool:
    if world.serve.poll() is not None:
        raise AssertionError(f"`skylift dns serve` exited with {world.serve.returncode}")
    try:
        return world.ask(None).rcode == "NOERROR"
    except (dns.exception.DNSException, OSError):
        return False
