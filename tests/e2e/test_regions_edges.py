"""Regions with their edges: routing through a peer edge, `down` of one region, prewarm.

Skipped while the edge runner (another slice) is not on the branch. Three
regions: ``a`` and ``b`` in zone ``x``, ``c`` alone in zone ``y``. With ``b``
down, ``b``'s users are served by ``a`` (same zone, route ``failover``) and
``a`` prewarms ``b``'s replica; ``c``'s users, with ``c`` down, get the
documented 503, never another zone.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import wait_for
from tests.e2e.regions_harness import Regions, running_regions

if shutil.which("haproxy") is None:
    pytest.skip("haproxy is not installed", allow_module_level=True)


@pytest.fixture
def edged(tmp_path: Path) -> Iterator[Regions]:
    with running_regions(tmp_path, edge=True, failover={"prewarm": 1.0}) as deployment:
        yield deployment


def via(regions: Regions, edge: str, home: str) -> httpx.Response:
    """A request through ``edge`` whose home region is ``home`` (the selector header)."""
    return httpx.get(
        regions.edge_url(edge) + "/",
        headers={"X-Skylift-Region": home},
        timeout=5,
        trust_env=False,
    )


def test_edges_route_fail_over_in_zone_and_prewarm(edged: Regions) -> None:
    edged.cli("up", "--region", "all", "--detach", "--timeout", "90", timeout=150)
    status = edged.status()
    assert all(entry["healthy"] for entry in status.values()), status
    assert {entry.get("edge_state") for entry in status.values()} == {"running"}

    def served(edge: str, home: str) -> tuple[int, str | None, str | None]:
        response = via(edged, edge, home)
        return (
            response.status_code,
            response.headers.get("X-Skylift-Region"),
            response.headers.get("X-Skylift-Route"),
        )

    # through a's edge, b's users are forwarded to b's edge and served there
    wait_for(lambda: served("a", "b") == (200, "b", "selector"), 20, "a's edge reaching b")
    assert served("c", "a") == (200, "a", "selector")

    edged.cli("down", "--region", "b", timeout=120)
    with pytest.raises(httpx.TransportError):  # b's edge went with it
        via(edged, "b", "b")
    wait_for(lambda: served("a", "b") == (200, "a", "failover"), 20, "b's users failed over")
    wait_for(
        lambda: edged.status()["a"]["services"]["web"]["desired"] == 2, 30, "a prewarmed for b"
    )
    assert edged.status()["c"]["services"]["web"]["desired"] == 1  # another zone: nothing

    edged.cli("down", "--region", "c", timeout=120)
    wait_for(lambda: served("a", "c")[0] == 503, 20, "c's users refused, not moved")
    refused = via(edged, "a", "c")
    assert refused.headers.get("Retry-After")
    assert refused.json()["error"] == "region_unavailable"

    edged.cli("up", "--region", "b", "--detach", "--timeout", "90", timeout=150)
    wait_for(lambda: served("a", "b") == (200, "b", "selector"), 20, "failback to b")
    wait_for(lambda: edged.status()["a"]["services"]["web"]["desired"] == 1, 30, "prewarm lowered")
