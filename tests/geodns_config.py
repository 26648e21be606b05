"""The geo-DNS tests' four-region config: German clients' home is eu-west (zone eu, with
eu-central), US clients' is us, Japanese clients' is asia. Test networks (documentation
ranges) stand in for the countries in the IP -> country data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REGIONS = ("us", "eu-west", "eu-central", "asia")
#: each region's edge address in the DNS answers (never bound: the answers are checked)
ADDRESSES = {
    "us": ["127.0.1.1"],
    "eu-west": ["127.0.1.2", "2001:db8:e::2"],
    "eu-central": ["127.0.1.3"],
    "asia": ["127.0.1.4"],
}
#: a client address per country, as the test's IP -> country data places them; each in a
#: /24 of its own (resolvers send ECS truncated to /24, so that is the finest that matters)
CLIENTS = {"DE": "198.51.100.7", "US": "192.0.2.200", "JP": "203.0.113.9", "BR": "198.18.0.1"}
#: the data set rows (start,end,country) `skylift geoip update` turns into the edge's map
SOURCE_CSV = """\
198.51.100.0,198.51.100.255,DE
192.0.2.0,192.0.2.255,US
203.0.113.0,203.0.113.255,JP
198.18.0.0,198.18.0.255,BR
2001:db8:d::,2001:db8:d:ffff:ffff:ffff:ffff:ffff,DE
"""
EXTRA = {"10.9.0.0/16": "DE"}  # edge.extra_countries: a private network of German clients
ZONE = "geo.skylift.test"


def config_data(
    *,
    edge_ports: dict[str, int],
    frontend_port: int,
    dns_port: int,
    geoip_map: str | None = "geoip.map",
    ttl: int = 5,
    check: dict[str, Any] | None = None,
) -> dict[str, Any]:
    regions = {
        "us": {"zone": "us", "countries": ["US", "CA"], "nearest": ["eu-west", "asia"]},
        "eu-west": {
            "zone": "eu",
            "countries": ["DE", "FR", "GB"],
            "nearest": ["eu-central", "us", "asia"],
        },
        "eu-central": {"zone": "eu", "countries": ["AT", "PL"], "nearest": ["eu-west", "asia"]},
        "asia": {"zone": "asia", "countries": ["JP", "SG"], "nearest": ["us", "eu-central"]},
    }
    for i, (name, region) in enumerate(regions.items()):
        region["edge"] = {"listen": f"127.0.0.1:{edge_ports[name]}"}
        region["database_url"] = f"postgresql://skylift@127.0.0.1:{5501 + i}/platform"
        region["port_offset"] = 10 * i
    edge: dict[str, Any] = {"service": "web", "default_region": "us", "extra_countries": EXTRA}
    if geoip_map is not None:
        edge["geoip_map"] = geoip_map
    return {
        "project": "geodns",
        "state_dir": "state",
        "edge": edge,
        "services": {
            "web": {
                "frontend": f"127.0.0.1:{frontend_port}",
                "backend": {"command": "true {port}", "ports": {"start": 29000, "end": 29004}},
            }
        },
        "regions": regions,
        "dns": {
            "zone": ZONE,
            "ttl": ttl,
            "listen": f"127.0.0.1:{dns_port}",
            "addresses": ADDRESSES,
            "check": check or {"interval": "200ms", "fall": 2, "rise": 2, "timeout": "1s"},
        },
    }


def write_config(directory: Path, **kwargs: Any) -> Path:
    path = directory / "skylift.yaml"
    path.write_text(yaml.safe_dump(config_data(**kwargs), sort_keys=False))
    return path


def default_ports() -> dict[str, Any]:
    """Ports for configs that are only rendered, never run (unit tests)."""
    return {
        "edge_ports": {r: 18201 + i for i, r in enumerate(REGIONS)},
        "frontend_port": 18000,
        "dns_port": 18353,
    }


def topology() -> Any:
    """The rules' topology of the config (validated, no file)."""
    from skylift.config.root import SkyliftConfig
    from skylift.regions.config import topology_of

    return topology_of(SkyliftConfig.model_validate(config_data(**default_ports())))
