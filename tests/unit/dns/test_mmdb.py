"""The country database PowerDNS reads: the edge's map plus extras, read back with maxminddb."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import maxminddb
import pytest

from skylift.dns.mmdb import build_mmdb, map_entries, merged, mmdb_fresh
from skylift.edge.geoip import build_map
from tests.geodns_config import CLIENTS, EXTRA, SOURCE_CSV


def country(db: Path, address: str) -> str | None:
    with maxminddb.open_database(str(db)) as reader:
        record = reader.get(address)
    if not isinstance(record, dict):
        return None
    return str(record["country"]["iso_code"])


@pytest.fixture
def edge_map(tmp_path: Path) -> Path:
    """The edge's map, built by the same code as `skylift geoip update`."""
    source = tmp_path / "geo.csv"
    source.write_text(SOURCE_CSV)
    out = tmp_path / "geoip.map"
    build_map(source, out)
    return out


def test_clients_are_placed_in_the_same_country_as_the_edges_map_places_them(
    edge_map: Path, tmp_path: Path
) -> None:
    db = tmp_path / "countries.mmdb"
    stats = build_mmdb(edge_map, EXTRA, db)
    assert stats.skipped == 0
    for cc, address in CLIENTS.items():
        assert country(db, address) == cc
    assert country(db, "2001:db8:d::5") == "DE"  # IPv6 rows too
    assert country(db, "10.9.3.4") == "DE"  # edge.extra_countries
    assert country(db, "8.8.8.8") is None  # unknown: PowerDNS's %cc says `unknown`


def test_the_most_specific_network_wins_as_in_haproxy_map_ip(tmp_path: Path) -> None:
    db = tmp_path / "countries.mmdb"
    source = tmp_path / "geoip.map"
    source.write_text("# comment\n198.51.100.0/24 US\nnot a line\n")
    stats = build_mmdb(source, {"198.51.100.64/26": "DE", "198.51.100.0/24": "FR"}, db)
    assert stats.skipped == 1
    assert country(db, "198.51.100.70") == "DE"  # finer extra inside the map's block
    assert country(db, "198.51.100.1") == "FR"  # same network: the extra replaces the map's


def test_entries_are_inserted_coarsest_first_with_ipv4_under_the_v6_tree() -> None:
    entries = [e for e in map_entries(["10.0.0.0/8 DE", "2001:db8::/32 JP", "10.1.0.0/16 FR"]) if e]
    order = [str(net) for net, _ in merged(entries, {})]
    assert order == ["2001:db8::/32", "10.0.0.0/8", "10.1.0.0/16"]
    assert merged([(ipaddress.ip_network("10.0.0.0/8"), "DE")], {"10.0.0.0/8": "fr"})[0][1] == "FR"


def test_the_database_is_rebuilt_only_when_its_inputs_change(
    edge_map: Path, tmp_path: Path
) -> None:
    db = tmp_path / "countries.mmdb"
    assert not mmdb_fresh(edge_map, EXTRA, db)
    build_mmdb(edge_map, EXTRA, db)
    assert mmdb_fresh(edge_map, EXTRA, db)
    assert not mmdb_fresh(edge_map, {**EXTRA, "10.10.0.0/16": "JP"}, db)
    edge_map.write_text(edge_map.read_text() + "192.0.2.0/25 DE\n")
    assert not mmdb_fresh(edge_map, EXTRA, db)


def test_no_map_builds_from_the_extras_alone(tmp_path: Path) -> None:
    db = tmp_path / "countries.mmdb"
    assert build_mmdb(None, EXTRA, db).networks == 1
    assert country(db, "10.9.0.1") == "DE"
