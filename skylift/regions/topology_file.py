"""The topology file each region's services read (the platform's ``TOPOLOGY_FILE``).

Pure: the document is derived from the multi-region config as region ``name``
sees it (its way to reach each peer's edge: ``edge.reach``, else the peer's
``edge.listen``). The region daemon writes it to ``<region state>/topology.json``
and names it in every replica's environment.
"""

from __future__ import annotations

from typing import Any

from skylift.config.root import SkyliftConfig
from skylift.regions.config import topology_of

TOPOLOGY_FILE = "topology.json"
ENV_NAMES = ("SKYLIFT_REGION_TOPOLOGY_FILE", "SKYLIFT_PLATFORM_TOPOLOGY_FILE")


def topology_document(config: SkyliftConfig, name: str) -> dict[str, Any]:
    """``{"default", "mode", "regions": [{name, zone, countries, nearest, standby_of, edge}]}``."""
    topology = topology_of(config)
    own = config.edged_regions[name]
    assert own.edge is not None
    regions = []
    for facts in topology.regions:
        region = config.edged_regions[facts.name]
        assert region.edge is not None
        edge = region.edge.listen if facts.name == name else own.edge.reach.get(facts.name)
        regions.append(
            {
                "name": facts.name,
                "zone": facts.zone,
                "countries": sorted(facts.countries),
                "nearest": list(facts.nearest),
                "standby_of": facts.standby_of,
                "edge": edge or region.edge.listen,
            }
        )
    document: dict[str, Any] = {
        "default": topology.default,
        "mode": topology.mode,
        "regions": regions,
    }
    if config.audit_aggregation is not None:  # off unless configured (platform.audit_export)
        document["audit_aggregation"] = config.audit_aggregation.model_dump(mode="json")
    return document
