"""What one region's edge is made of: a frozen spec, the edge's only input.

The orchestration (``skylift up --region``) builds an :class:`EdgeSpec` from
the config; the edge package renders HAProxy from it and keeps it live. The
residency decisions themselves live in :mod:`skylift.regions.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from skylift.edge.cache import EdgeCache
from skylift.regions.rules import Topology


@dataclass(frozen=True, slots=True)
class RegionCheck:
    """How each edge health-checks every region (seconds).

    A dead region is out of rotation after about ``fall * inter``.
    """

    path: str = "/healthz"  # checked on the region's own service frontend
    inter: float = 0.5
    fall: int = 2
    rise: int = 2
    timeout: float = 0.5


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    """One region's edge: where it listens, what it forwards to, what it trusts."""

    region: str  # the region this edge belongs to
    topology: Topology  # every region, zones, nearest order, default, mode
    listen: str  # HOST:PORT clients connect to
    local: str  # HOST:PORT of this region's service frontend (its own pool)
    #: region -> HOST:PORT this edge uses to reach that region's edge (maybe a proxy)
    peers: Mapping[str, str]
    #: source addresses (IPs) of peer edges: only they may send the hop header
    trusted_peers: frozenset[str]
    state_dir: Path  # absolute; config, maps, key files, sockets
    #: kid -> public key PEM (SPKI) of every region's token signing keys
    token_keys: Mapping[str, str] = field(default_factory=dict)
    #: issuer of each region's tokens (``skylift-platform/REGION``) is checked too
    check: RegionCheck = RegionCheck()
    geoip_map: Path | None = None  # CIDR -> country, HAProxy map_ip format
    extra_countries: Mapping[str, str] = field(default_factory=dict)  # CIDR -> country
    retry_after: int = 2  # seconds advertised with the documented 503
    metrics_listen: str | None = None  # loopback HOST:PORT for the edge's Prometheus exporter
    cache: EdgeCache | None = None  # declared-public paths cached at the edge (off: None)
