"""The regions a platform belongs to, read from the topology file the orchestration writes.

The file is JSON::

    {"default": "eu-west", "mode": "geo",
     "regions": [{"name": "eu-west", "zone": "eu", "countries": ["FR", "DE"],
                  "nearest": ["eu-central", "us"], "standby_of": null,
                  "edge": "10.0.0.2:8443"}, ...]}

It becomes the shared :class:`~skylift.regions.rules.Topology` (the same
object the edge renders from) plus each region's edge address, through which
this platform reaches its peers (directory pushes, forwarded logins, JWKS).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylift.regions.rules import RegionFacts, Topology


@dataclass(frozen=True)
class AuditAggregationFacts:
    """The aggregating region and the regions that opted in to answer it."""

    region: str
    sources: tuple[str, ...]


def parse_aggregation(raw: Any, edges: Mapping[str, str]) -> AuditAggregationFacts | None:
    """``{"region": NAME, "regions": [NAME, ...]}`` or absent (aggregation off)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("region"), str):
        raise TopologyError('\'audit_aggregation\' must be {"region": NAME, "regions": [...]}')
    sources = _strings(raw.get("regions"), "audit_aggregation.regions")
    unknown = [n for n in (raw["region"], *sources) if n not in edges]
    if unknown:
        raise TopologyError(f"audit_aggregation names unknown regions {unknown}")
    return AuditAggregationFacts(region=raw["region"], sources=sources)


class TopologyError(ValueError):
    """The topology file is malformed; the message names the field."""


@dataclass(frozen=True)
class Regions:
    """The topology and where each region's edge listens (``HOST:PORT``)."""

    topology: Topology
    edges: Mapping[str, str]
    #: the topology's ``audit_aggregation`` (None: off); see :mod:`.audit_export`
    audit: AuditAggregationFacts | None = None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TopologyError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def parse_topology(raw: Mapping[str, Any]) -> Regions:
    """Build :class:`Regions` from the decoded JSON; :class:`TopologyError` says what is wrong."""
    regions_raw = raw.get("regions")
    if not isinstance(regions_raw, list) or not regions_raw:
        raise TopologyError("'regions' must be a non-empty list")
    facts: list[RegionFacts] = []
    edges: dict[str, str] = {}
    for i, item in enumerate(regions_raw):
        where = f"regions[{i}]"
        if not isinstance(item, dict):
            raise TopologyError(f"{where} must be an object")
        name, zone, edge = item.get("name"), item.get("zone"), item.get("edge")
        for key, value in (("name", name), ("zone", zone), ("edge", edge)):
            if not isinstance(value, str) or not value:
                raise TopologyError(f"{where}.{key} must be a non-empty string")
        assert isinstance(name, str) and isinstance(zone, str) and isinstance(edge, str)
        host, sep, port = edge.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise TopologyError(f"{where}.edge must be HOST:PORT, got {edge!r}")
        standby_of = item.get("standby_of")
        if standby_of is not None and not isinstance(standby_of, str):
            raise TopologyError(f"{where}.standby_of must be a region name or null")
        facts.append(
            RegionFacts(
                name=name,
                zone=zone,
                countries=frozenset(
                    c.upper() for c in _strings(item.get("countries", []), f"{where}.countries")
                ),
                nearest=_strings(item.get("nearest", []), f"{where}.nearest"),
                standby_of=standby_of,
            )
        )
        edges[name] = edge
    default, mode = raw.get("default"), raw.get("mode", "geo")
    if not isinstance(default, str):
        raise TopologyError("'default' must be a region name")
    if mode not in ("geo", "latency"):
        raise TopologyError("'mode' must be 'geo' or 'latency'")
    try:
        topology = Topology(regions=tuple(facts), default=default, mode=mode)
    except ValueError as exc:
        raise TopologyError(str(exc)) from None
    return Regions(topology, edges, parse_aggregation(raw.get("audit_aggregation"), edges))


def load_topology(path: Path) -> Regions:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TopologyError(f"cannot read the topology file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise TopologyError(f"{path}: the topology must be a JSON object")
    return parse_topology(raw)
