"""Regions end to end through the real CLI: one controller process per region on loopback.

The edge is not started here (``SKYLIFT_REGION_EDGE=off``): what is tested is the
orchestration: `up --region all --detach`, `status -o json`, `down --region X`
leaving the others running, `up --region X --detach` bringing it back, and a
region API over TLS. test_regions_edges.py runs the same with the edges.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.harness import wait_for
from tests.e2e.regions_harness import OFFSETS, Regions, regions

__all__ = ["regions"]  # the fixture


def _replica_pids(entry: dict[str, Any]) -> set[int]:
    return {r["pid"] for r in entry["services"]["web"]["replicas"] if r["state"] == "ready"}


def test_up_all_status_down_one_up_again(regions: Regions) -> None:
    refused = regions.cli("up", "--detach", check=False)
    assert refused.returncode == 2 and "pass --region" in refused.stderr

    regions.cli("up", "--region", "all", "--detach", "--timeout", "60", timeout=120)
    status = regions.status()
    assert set(status) == {"a", "b", "c"}
    for name, entry in status.items():
        assert entry["zone"] == ("y" if name == "c" else "x")
        assert entry["edge"] == f"127.0.0.1:{regions.base + OFFSETS[name] + 5}"
        assert entry["healthy"] is True, entry
        web = entry["services"]["web"]
        assert web["ready"] == web["desired"] == 1
        assert web["frontend"] == f"127.0.0.1:{regions.base + OFFSETS[name] + 2}"
        assert httpx.get(regions.frontend(name), timeout=5, trust_env=False).status_code == 200
    # each region is its own controller process with its own state dir, lock and token
    pids = {int((regions.root / "state" / n / "controller.pid").read_text()) for n in OFFSETS}
    assert len(pids) == 3
    table = regions.cli("status").stdout
    assert "a " in table and "healthy" in table
    # a one-controller command names its region: that region's API, token and store
    events = json.loads(regions.cli("events", "--region", "c", "-o", "json").stdout)["events"]
    assert any(e["kind"] == "controller_started" for e in events)

    # region c's API is TLS only, verified with its CA, and still needs the token
    c_api = f"127.0.0.1:{regions.base + 100}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{c_api}/api/v1/services", timeout=3, trust_env=False)
    ca = str(regions.root / regions.tls["ca_file"])
    anonymous = httpx.get(f"https://{c_api}/api/v1/services", verify=ca, timeout=3, trust_env=False)
    assert anonymous.status_code == 401
    with pytest.raises(httpx.ConnectError):  # a client without the CA refuses the certificate
        httpx.get(f"https://{c_api}/livez", timeout=3, trust_env=False)

    kept = {n: _replica_pids(status[n]) for n in ("a", "c")}
    down = regions.cli("down", "--region", "b", timeout=120)
    assert "region b: stopped" in down.stdout
    after = regions.status()
    assert after["b"]["healthy"] is False and after["b"]["error"].startswith("unreachable: ")
    for name in ("a", "c"):
        assert after[name]["healthy"] is True
        assert _replica_pids(after[name]) == kept[name]  # untouched by b's stop
    with pytest.raises(httpx.TransportError):
        httpx.get(regions.frontend("b"), timeout=2, trust_env=False)

    regions.cli("up", "--region", "b", "--detach", "--timeout", "60", timeout=120)
    back = regions.status()
    assert all(entry["healthy"] for entry in back.values()), back
    assert _replica_pids(back["a"]) == kept["a"]
    wait_for(
        lambda: httpx.get(regions.frontend("b"), timeout=2, trust_env=False).status_code == 200,
        10,
        "region b serving again",
    )

    # controllers stopped by a signal leave replicas serving; `down --region all` then
    # stops what each left, found through each region's own store
    replicas = {pid for entry in back.values() for pid in _replica_pids(entry)}
    for name in OFFSETS:
        os.kill(int((regions.root / "state" / name / "controller.pid").read_text()), signal.SIGTERM)
    wait_for(
        lambda: all(not e["healthy"] for e in regions.status().values()), 30, "controllers gone"
    )
    assert all(psutil.pid_exists(pid) for pid in replicas)  # still serving
    offline = regions.cli("down", "--region", "all", timeout=120)
    assert offline.stdout.count("stopped (no controller was running)") == 3, offline.stdout
    wait_for(lambda: not any(psutil.pid_exists(p) for p in replicas), 20, "replicas stopped")
