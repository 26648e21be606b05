"""The multi-region file: validation with named fixes, and what each region runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skylift.config import ConfigError, load_config
from skylift.regions.config import (
    RegionSelectionError,
    edge_spec,
    region_config,
    select_regions,
    shared_host_clashes,
    topology_of,
)
from skylift.regions.rules import failover_chain

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "regions.yaml"


def _load(tmp_path: Path, data: dict) -> object:
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path).config


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_derives_one_isolated_config_per_region() -> None:
    config = load_config(EXAMPLE).config
    names = select_regions(config, "all")
    assert names == ["us", "eu-west", "eu-central", "asia"]
    assert shared_host_clashes(config, names) == []
    derived = {n: region_config(config, n) for n in names}
    assert len({d.state_dir for d in derived.values()}) == 4  # own state, store and lock each
    assert len({d.project for d in derived.values()}) == 4  # own labels
    assert all(d.store.url is None for d in derived.values())  # SQLite in its own state dir
    central = derived["eu-central"].services["platform"]
    assert central.frontend == "127.0.0.1:8620"
    env = central.backend.env
    assert env["SKYLIFT_REGION"] == "eu-central" and env["SKYLIFT_ZONE"] == "eu"
    assert env["SKYLIFT_REGION_STANDBY_OF"] == "eu-west"
    assert env["SKYLIFT_REGION_DATABASE_URL"].endswith(":5503/platform")
    assert list(derived["eu-central"].regions) == ["eu-central"]  # its own backups only


def test_topology_and_edge_spec_follow_the_file() -> None:
    config = load_config(EXAMPLE).config
    topology = topology_of(config)
    assert topology.default == "us"
    assert topology.standby_holder("eu-west") == "eu-central"
    assert failover_chain(topology, "eu-west") == ("eu-west", "eu-central")
    spec = edge_spec(config, "eu-west", EXAMPLE.parent)
    assert spec.listen == "127.0.0.1:9101" and spec.local == "127.0.0.1:8610"
    assert spec.peers == {
        "us": "127.0.0.1:9100",
        "eu-central": "127.0.0.1:9102",
        "asia": "127.0.0.1:9103",
    }
    assert spec.state_dir.is_absolute() and spec.state_dir.name == "edge"


def test_region_selection_names_the_choices() -> None:
    config = load_config(EXAMPLE).config
    assert select_regions(config, "asia") == ["asia"]
    with pytest.raises(RegionSelectionError, match="eu-west"):
        select_regions(config, "mars")


def test_overrides_merge_over_the_shared_service(tmp_path: Path) -> None:
    data = _example()
    data["regions"]["asia"]["services"] = {
        "platform": {"replicas": 4, "backend": {"env": {"X": "1"}}}
    }
    config = _load(tmp_path, data)
    asia = region_config(config, "asia").services["platform"]
    assert asia.replicas == 4
    assert asia.backend.env["X"] == "1" and asia.backend.env["SKYLIFT_REGION"] == "asia"
    assert asia.backend.command == region_config(config, "us").services["platform"].backend.command


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d["regions"]["asia"].pop("zone"), "lack `zone` or `edge`"),
        (lambda d: d["regions"].update(all=d["regions"]["us"]), "reserved"),
        (
            lambda d: d["regions"]["eu-west"]["standby"].update(region="us"),
            "standby never leaves the zone",
        ),
        (lambda d: d["regions"]["us"].update(nearest=["mars"]), "unknown regions"),
        (lambda d: d["edge"].update(default_region="mars"), "default_region"),
        (lambda d: d["regions"]["us"].update(countries=["Germany"]), "ISO 3166"),
        (
            lambda d: d["regions"]["us"].update(database_url="postgresql://u:pw@h/db"),
            "password",
        ),
        (lambda d: d["regions"]["us"].update(services={"nope": {}}), "unknown services"),
    ],
)
def test_inconsistent_regions_are_refused_with_the_fix(
    tmp_path: Path, change: object, needle: str
) -> None:
    data = _example()
    change(data)  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    assert needle in str(info.value)


def test_regions_on_one_host_must_not_share_ports(tmp_path: Path) -> None:
    data = _example()
    data["regions"]["asia"]["port_offset"] = 20  # the same as eu-central
    config = _load(tmp_path, data)
    clashes = shared_host_clashes(config, select_regions(config, "all"))
    assert any("eu-central" in c and "asia" in c for c in clashes), clashes


def test_api_beyond_loopback_needs_tls(tmp_path: Path) -> None:
    data = _example()
    data["regions"]["us"]["api"] = {"listen": "10.0.0.5:8500"}
    with pytest.raises(ConfigError, match="without TLS"):
        _load(tmp_path, data)
    data["regions"]["us"]["api"] = {
        "listen": "10.0.0.5:8500",
        "tls_cert_file": "us.crt",
        "tls_key_file": "us.key",
    }
    config = _load(tmp_path, data)
    assert region_config(config, "us").api.listen == "10.0.0.5:8500"
