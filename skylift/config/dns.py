"""Config of the geo-DNS front (root ``dns:``): a PowerDNS geoip backend in front of the edges.

Off unless the root has a ``dns:`` block. The answers themselves are not
configured here: they follow the regions' ``countries``, zones and
``edge.default_region`` (the same residency rules the edges route by); this
block says which zone and names are served, with which TTL, where PowerDNS
listens, and at which address clients reach each region's edge.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from skylift.config.base import Model, _parse_listen, split_listen
from skylift.units import Duration

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_NAME_HINT = "write lowercase DNS labels separated by dots, e.g. 'geo.example.com'"
#: edge listen hosts that are not an address a client can be sent to
WILDCARDS = frozenset({"0.0.0.0", "::", "", "*"})  # noqa: S104 (recognised, never bound)


def _dns_name(value: str, what: str) -> str:
    name = str(value).strip().rstrip(".").lower()
    if not _NAME_RE.match(name) or len(name) > 253:
        raise ValueError(f"invalid {what} {value!r}: {_NAME_HINT}")
    return name


class DnsCheck(Model):
    """How the DNS front checks each region's edge (its ``/_skylift/region-health``)."""

    interval: Duration = Field(1.0, gt=0, description="time between two rounds of checks")
    fall: int = Field(2, ge=1, description="failed checks before a region's answers move")
    rise: int = Field(2, ge=1, description="passed checks before they move back")
    timeout: Duration = Field(1.0, gt=0, description="longest wait for one check")


class DnsSettings(Model):
    """The geo-DNS front: PowerDNS (geoip backend) answering per country with an edge."""

    zone: str = Field(
        description="the DNS zone PowerDNS is authoritative for, e.g. geo.example.com"
    )
    names: list[str] = Field(
        default_factory=lambda: ["www"],
        description="names under the zone answered per country (www -> www.<zone>)",
    )
    ttl: int = Field(
        30,
        ge=1,
        le=86400,
        description="TTL of every answer: a client's resolver may keep an old answer this long "
        "after a rewrite, so it bounds how late clients follow a failover",
    )
    listen: str = Field("127.0.0.1:5353", description="HOST:PORT PowerDNS answers on (UDP+TCP)")
    addresses: dict[str, list[str]] = Field(
        default_factory=dict,
        description="region -> IP addresses clients reach its edge at (default: the host of "
        "the region's edge.listen, if it is an IP address)",
    )
    probe: dict[str, str] = Field(
        default_factory=dict,
        description="region -> HOST:PORT where the DNS front checks its edge (default: "
        "edge.listen)",
    )
    nameservers: list[str] = Field(
        default_factory=list,
        description="NS names of the zone (default: ns1.<zone>, answered with the listen host)",
    )
    state_dir: str | None = Field(
        None, description="pdns.conf, zone file, country database (default: <state_dir>/dns)"
    )
    check: DnsCheck = DnsCheck()

    @field_validator("zone", mode="before")
    @classmethod
    def _zone(cls, value: Any) -> str:
        return _dns_name(str(value), "dns.zone")

    @field_validator("names", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [_dns_name(str(v), "name in dns.names") for v in value]

    @field_validator("nameservers", mode="before")
    @classmethod
    def _nameservers(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [_dns_name(str(v), "name in dns.nameservers") for v in value]

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> str:
        return _parse_listen(value)

    @field_validator("probe", mode="before")
    @classmethod
    def _probe(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: _parse_listen(v) for k, v in value.items()}
        return value

    @field_validator("addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, list[str]] = {}
        for region, items in value.items():
            listed = items if isinstance(items, list) else [items]
            try:
                out[str(region)] = [str(ipaddress.ip_address(str(a).strip())) for a in listed]
            except ValueError:
                raise ValueError(
                    f"dns.addresses.{region}: {items!r} is not a list of IP addresses: write "
                    "e.g. [203.0.113.10] (DNS answers carry addresses, not host names)"
                ) from None
        return out

    @model_validator(mode="after")
    def _names_unique(self) -> DnsSettings:
        if not self.names:
            raise ValueError("dns.names is empty: name at least one, e.g. [www]")
        reserved = [n for n in self.names if n.split(".")[-1] in ("cc", "edge")]
        if reserved:
            raise ValueError(
                f"dns.names {reserved} end in 'cc' or 'edge', which the answers use "
                "(<country>.cc.<zone>, <region>.edge.<zone>): pick other names"
            )
        return self


def edge_host(listen: str) -> str:
    return split_listen(listen)[0].strip("[]")


def dns_problems(dns: DnsSettings, regions: Mapping[str, Any]) -> list[str]:
    """What makes ``dns:`` inconsistent with the regions, each with its fix.

    ``regions`` maps a name to its :class:`skylift.config.regions.Region`;
    only the phase-2 regions (with an edge) get answers.
    """
    edged = {n: r for n, r in regions.items() if getattr(r, "edge", None) is not None}
    problems: list[str] = []
    if not edged:
        problems.append("dns: is set but no region has an edge: add `regions:` with `edge`")
    for key in ("addresses", "probe"):
        unknown = [n for n in getattr(dns, key) if n not in edged]
        if unknown:
            problems.append(f"dns.{key} names unknown regions {unknown}: use {sorted(edged)}")
    for name, region in edged.items():
        if name in dns.addresses:
            continue
        host = edge_host(region.edge.listen)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            host = ""
        if host in WILDCARDS:
            problems.append(
                f"dns.addresses.{name} is missing: its edge listens on {region.edge.listen!r}, "
                "not an address clients can be sent to; give the IP clients reach it at"
            )
    return problems
