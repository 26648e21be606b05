"""What ``skylift status`` and ``skylift region status`` show for a multi-region file.

The shaping is pure (tested without any controller); the CLI gathers the
inputs (each region's API answer or the error, its edge state, its databases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EDGE_DOWN = frozenset({"failed", "stopped", "starting"})


def services_healthy(services: Mapping[str, Any]) -> bool:
    """Every service that should run has at least one ready replica."""
    return all(s.get("ready", 0) >= 1 for s in services.values() if s.get("desired", 0) > 0)


def region_entry(
    *,
    zone: str,
    edge: str,
    answer: Mapping[str, Any] | None,
    error: str | None = None,
    edge_state: Mapping[str, Any] | None = None,
    superseded_by: str | None = None,
) -> dict[str, Any]:
    """One region of ``status -o json``: ``answer`` is its API's ``/api/v1/services``.

    ``superseded_by``: its database was promoted away to that region's standby; it
    serves nobody until re-seeded, so it is not healthy whatever its services say.
    """
    if answer is None:
        return {
            "zone": zone,
            "edge": edge,
            "healthy": False,
            "error": f"unreachable: {error or 'no answer'}",
            "services": {},
        }
    services = dict(answer.get("services") or {})
    state = (edge_state or {}).get("state")
    healthy = services_healthy(services) and state not in EDGE_DOWN and superseded_by is None
    entry: dict[str, Any] = {
        "zone": zone,
        "edge": edge,
        "healthy": healthy,
        "services": services,
        "controller": answer.get("controller") or {},
    }
    if state is not None:
        entry["edge_state"] = state
    if superseded_by is not None:
        entry["superseded_by"] = superseded_by
    return entry


def status_table(regions: Mapping[str, Mapping[str, Any]]) -> str:
    """The human view: one line per region, then its services."""
    lines = []
    for name, r in regions.items():
        health = "healthy" if r["healthy"] else "UNHEALTHY"
        edge_state = f" ({r['edge_state']})" if r.get("edge_state") else ""
        lines.append(f"{name:<12} zone {r['zone']:<6} edge {r['edge']}{edge_state}  {health}")
        if r.get("error"):
            lines.append(f"  {r['error']}")
        if r.get("superseded_by"):
            lines.append(f"  database promoted away to {r['superseded_by']}: serves nobody")
        for svc, s in r.get("services", {}).items():
            lines.append(
                f"  {svc:<12} {s.get('ready')}/{s.get('desired')} ready  {s.get('state', '')}  "
                f"http://{s.get('frontend')}/"
            )
    return "\n".join(lines)


def database_entry(
    *,
    primary: Mapping[str, Any],
    standby: Mapping[str, Any] | None,
    holder: str | None,
    promotion: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``region status``: the region's database role, where its standby is, promoted or not.

    ``promoted`` is true when a promotion was recorded, or when the standby
    answers and is no longer in recovery (promoted by hand, say).
    """
    promoted = promotion is not None or (
        standby is not None and standby.get("reachable") and standby.get("in_recovery") is False
    )
    return {
        "role": primary.get("role"),
        "fenced": bool(primary.get("read_only")),
        "error": primary.get("error"),
        "standby": None
        if standby is None
        else {
            "region": holder,
            "role": standby.get("role"),
            "error": standby.get("error"),
        },
        "promoted": bool(promoted),
        "promotion": dict(promotion) if promotion is not None else None,
    }
