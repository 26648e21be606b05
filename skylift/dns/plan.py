"""What the geo-DNS front serves, derived from the one config file: pure.

A :class:`DnsPlan` is the front's only input (like the edge's ``EdgeSpec``):
the zone and names, the TTL, where PowerDNS listens, each region's edge
address (what answers carry) and probe target (what the front checks), and
the residency topology the answers are chosen by.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from skylift.config.dns import WILDCARDS, DnsSettings, edge_host
from skylift.config.root import SkyliftConfig
from skylift.regions.config import topology_of
from skylift.regions.rules import Topology

PDNS_CONF = "pdns.conf"
ZONES_FILE = "zones.yaml"
MMDB_FILE = "countries.mmdb"
STATE_FILE = "dns.json"
PID_FILE = "pdns.pid"
LOG_FILE = "pdns.log"
CONTROL_SOCKET = "pdns.controlsocket"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; pdns_control adds a client socket beside it


@dataclass(frozen=True, slots=True)
class DnsPlan:
    """The geo-DNS front of one config file."""

    zone: str
    names: tuple[str, ...]
    ttl: int
    listen_host: str
    listen_port: int
    topology: Topology
    #: region -> the addresses clients reach its edge at (A and AAAA records)
    addresses: Mapping[str, tuple[str, ...]]
    #: region -> HOST:PORT the front checks the edge's region-health path at
    probes: Mapping[str, str]
    #: NS name -> its address when the name lies inside the zone (glue), else None
    nameservers: tuple[tuple[str, str | None], ...]
    state_dir: Path
    interval: float = 1.0
    fall: int = 2
    rise: int = 2
    timeout: float = 1.0
    geoip_map: Path | None = None
    extra_countries: Mapping[str, str] = field(default_factory=dict)

    @property
    def pdns_conf(self) -> Path:
        return self.state_dir / PDNS_CONF

    @property
    def zones_file(self) -> Path:
        return self.state_dir / ZONES_FILE

    @property
    def mmdb(self) -> Path:
        return self.state_dir / MMDB_FILE

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def socket_dir(self) -> Path:
        """PowerDNS's control socket dir: the state dir, or a short one when that is too deep."""
        if len(str(self.state_dir)) + len(CONTROL_SOCKET) + 1 <= SOCKET_PATH_MAX:
            return self.state_dir
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
        return Path(f"/tmp/skylift-pdns-{digest}")  # noqa: S108 (created 0700, checked ours)

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def dns_plan(config: SkyliftConfig, config_dir: Path) -> DnsPlan:
    """The plan of ``config``'s ``dns:`` block (the caller checked it is set)."""
    dns = config.dns
    if dns is None:
        raise ValueError("the config has no `dns:` block: add `dns: {zone: geo.example.com}`")
    regions = config.edged_regions
    addresses: dict[str, tuple[str, ...]] = {}
    probes: dict[str, str] = {}
    for name, region in regions.items():
        assert region.edge is not None
        host = edge_host(region.edge.listen)
        addresses[name] = tuple(dns.addresses.get(name) or [host])
        port = region.edge.listen.rpartition(":")[2]
        probes[name] = dns.probe.get(name) or f"{'127.0.0.1' if host in WILDCARDS else host}:{port}"
    listen_host, _, listen_port = dns.listen.rpartition(":")
    listen_host = listen_host.strip("[]")
    state = Path(dns.state_dir or f"{config.state_dir}/dns")
    geoip = config.edge.geoip_map
    return DnsPlan(
        zone=dns.zone,
        names=tuple(dns.names),
        ttl=dns.ttl,
        listen_host=listen_host,
        listen_port=int(listen_port),
        topology=topology_of(config),
        addresses=addresses,
        probes=probes,
        nameservers=_nameservers(dns, listen_host),
        state_dir=state if state.is_absolute() else config_dir / state,
        interval=dns.check.interval,
        fall=dns.check.fall,
        rise=dns.check.rise,
        timeout=dns.check.timeout,
        geoip_map=(config_dir / geoip) if geoip else None,
        extra_countries=dict(config.edge.extra_countries),
    )


def _nameservers(dns: DnsSettings, listen_host: str) -> tuple[tuple[str, str | None], ...]:
    names = dns.nameservers or [f"ns1.{dns.zone}"]
    glue = listen_host if _is_ip(listen_host) and listen_host not in WILDCARDS else None
    return tuple(
        (name, glue if name == dns.zone or name.endswith(f".{dns.zone}") else None)
        for name in names
    )
