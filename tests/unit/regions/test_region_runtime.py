"""A region's edge and prewarm beside its controller, with a fake edge and controller."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from skylift.config import load_config
from skylift.regions.daemon import RegionRuntime, read_edge_state
from skylift.regions.database import Promotion
from skylift.regions.promotion import (
    promoted_map,
    read_local_promotions,
    write_local_promotion,
)
from tests.polling import wait_for_async

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "regions.yaml"


class FakeEdge:
    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.started = 0
        self.stopped = 0
        self.health = {name: True for name in spec.topology.names}

    async def start(self) -> None:
        self.started += 1

    async def apply(self, spec: Any) -> None:
        self.spec = spec

    async def stop(self) -> None:
        self.stopped += 1

    async def region_health(self) -> dict[str, bool]:
        return dict(self.health)


class FakeController:
    def __init__(self, desired: int) -> None:
        self.loops = {"platform": SimpleNamespace(desired=desired)}
        self.autoscalers: dict[str, Any] = {}
        self.ceilings: dict[str, Any] = {}
        self.events: list[tuple[str, str]] = []
        self.writer = SimpleNamespace(set_desired=lambda service, n: None)
        self.recorder = SimpleNamespace(
            event=lambda kind, message, **_: self.events.append((kind, message))
        )


def _root(tmp_path: Path) -> Any:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["edge"]["check"]["inter"] = "100ms"  # prewarm polls every 2 x inter (>= 0.5 s)
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def test_edge_started_prewarm_follows_its_health_and_down_stops_it(tmp_path: Path) -> None:
    root = _root(tmp_path)
    edges: list[FakeEdge] = []

    def factory(spec: Any) -> FakeEdge:
        edges.append(FakeEdge(spec))
        return edges[-1]

    runtime = RegionRuntime(root, "eu-central", with_edge=True, edge_factory=factory)
    runtime.state_dir.mkdir(parents=True)
    controller = FakeController(desired=2)

    async def scenario() -> None:
        await runtime.start(controller)  # type: ignore[arg-type]
        (edge,) = edges
        assert edge.spec.region == "eu-central" and edge.spec.listen == "127.0.0.1:9102"
        await wait_for_async(
            lambda: read_edge_state(runtime.state_dir).get("state") == "running", 5, "edge up"
        )
        edge.health["eu-west"] = False
        await wait_for_async(
            lambda: controller.loops["platform"].desired == 4, 5, "prewarm for eu-west"
        )
        assert controller.events[-1][0] == "prewarm"
        assert "covering eu-west" in controller.events[-1][1]
        edge.health["eu-west"] = True
        await wait_for_async(lambda: controller.loops["platform"].desired == 2, 5, "lowered")
        await runtime.stop(down=True)
        assert edge.stopped == 1

    asyncio.run(scenario())
    assert read_edge_state(runtime.state_dir)["state"] == "stopped"


def test_without_edge_the_state_says_disabled(tmp_path: Path) -> None:
    root = _root(tmp_path)
    runtime = RegionRuntime(root, "us", with_edge=False)
    runtime.state_dir.mkdir(parents=True)

    async def scenario() -> None:
        await runtime.start(FakeController(2))  # type: ignore[arg-type]
        await runtime.stop(down=True)

    asyncio.run(scenario())
    assert read_edge_state(runtime.state_dir)["state"] == "disabled"


def test_local_promotion_records_round_trip(tmp_path: Path) -> None:
    record = Promotion("eu-west", "eu-central", 1.5, old_primary_fenced=False)
    path = write_local_promotion(tmp_path / "s", record)
    assert path.stat().st_mode & 0o777 == 0o600
    assert promoted_map(tmp_path / "s") == {"eu-west": "eu-central"}
    assert read_local_promotions(tmp_path / "s")["eu-west"] == record
    assert json.loads(path.read_text())["promoted"]["eu-west"]["holder"] == "eu-central"
    assert promoted_map(tmp_path / "nothing") == {}


def test_topology_file_and_its_place_in_every_replicas_environment(tmp_path: Path) -> None:
    from skylift.regions.config import topology_of
    from skylift.regions.daemon import region_loaded, write_topology
    from skylift.regions.rules import RegionFacts, Topology
    from skylift.regions.topology_file import topology_document

    data = yaml.safe_load(EXAMPLE.read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["regions"]["asia"]["edge"]["reach"] = {"us": "127.0.0.9:9100"}  # via a proxy
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    root = load_config(path)
    doc = topology_document(root.config, "asia")
    edges = {r["name"]: r["edge"] for r in doc["regions"]}
    assert edges == {
        "us": "127.0.0.9:9100",
        "eu-west": "127.0.0.1:9101",
        "eu-central": "127.0.0.1:9102",
        "asia": "127.0.0.1:9103",
    }
    rebuilt = Topology(
        tuple(
            RegionFacts(
                r["name"],
                r["zone"],
                frozenset(r["countries"]),
                tuple(r["nearest"]),
                r["standby_of"],
            )
            for r in doc["regions"]
        ),
        default=doc["default"],
        mode=doc["mode"],
    )
    assert rebuilt == topology_of(root.config)  # the very rules the edge renders from

    loaded = region_loaded(root, "eu-central")
    env = loaded.config.services["platform"].backend.env
    expected = str(tmp_path / "state" / "eu-central" / "topology.json")
    assert env["SKYLIFT_PLATFORM_TOPOLOGY_FILE"] == env["SKYLIFT_REGION_TOPOLOGY_FILE"] == expected
    assert env["SKYLIFT_REGION"] == "eu-central"  # the region's own variables stay
    loaded.state_dir.mkdir(parents=True)
    written = write_topology(root, "eu-central", loaded.state_dir)
    assert str(written) == expected
    assert json.loads(written.read_text())["default"] == "us"


def test_a_superseded_region_runs_no_replica_of_the_edges_service(tmp_path: Path) -> None:
    from skylift.regions.daemon import drain_superseded, region_loaded, store_drained
    from skylift.store import Store

    controller = FakeController(desired=2)
    drain_superseded(controller, "platform")  # type: ignore[arg-type]
    assert controller.loops["platform"].desired == 0
    assert controller.events[-1][0] == "scaled" and "promoted away" in controller.events[-1][1]
    drain_superseded(controller, "platform")  # type: ignore[arg-type]
    assert len(controller.events) == 1  # idempotent

    loaded = region_loaded(_root(tmp_path), "eu-west")
    loaded.state_dir.mkdir(parents=True)
    store_drained(loaded, "platform")  # before the controller starts: not one replica
    store = Store.open(loaded.store_url)
    try:
        assert store.desired("platform") == 0
        assert store.configured_replicas("platform") == 2
    finally:
        store.close()
    store_drained(loaded, "platform", drained=False)  # re-seeded, record removed
    store = Store.open(loaded.store_url)
    try:
        assert store.desired("platform") == 2  # the configured count again
    finally:
        store.close()
    assert not (loaded.state_dir / "drained-superseded").exists()
