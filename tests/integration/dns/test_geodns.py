"""Real queries against a real PowerDNS run by `skylift dns serve`: EDNS Client Subnet stands in
for clients in Germany, the US and Japan; an outage of eu-west moves Germany to eu-central."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from geodns_world import SKYLIFT, GeoWorld

from tests.geodns_config import ADDRESSES, CLIENTS, ZONE
from tests.polling import wait_for

#: edge: fall x inter (2 x 0.5 s) until its region-health says 503 (a dead pool: at once);
#: the front: fall x interval (2 x 0.2 s) + a check's timeout (1 s), then rewrite + reload;
#: generous slack on a busy CI
BOUND = 2 * 0.5 + 2 * 0.2 + 1.0 + 8.0
pytestmark = pytest.mark.xdist_group("geodns")  # one worker, one world for both tests


def test_german_us_and_japanese_subnets_get_their_home_regions_edges(geo: GeoWorld) -> None:
    de, us, jp = geo.ask(CLIENTS["DE"]), geo.ask(CLIENTS["US"]), geo.ask(CLIENTS["JP"])
    assert (de.cname, de.addresses) == (f"eu-west.edge.{ZONE}.", ("127.0.1.2",))
    assert (us.cname, us.addresses) == (f"us.edge.{ZONE}.", ("127.0.1.1",))
    assert (jp.cname, jp.addresses) == (f"asia.edge.{ZONE}.", ("127.0.1.4",))
    assert de.ttl == 5  # the config's TTL
    assert geo.ask(CLIENTS["DE"], "AAAA").addresses == ("2001:db8:e::2",)
    assert geo.region_for("2001:db8:d::7") == "eu-west"  # an IPv6 German subnet
    assert geo.region_for("10.9.4.5") == "eu-west"  # edge.extra_countries reach the DNS too
    assert geo.region_for(CLIENTS["BR"]) == "us"  # a country no region lists: the default
    assert geo.region_for("8.8.8.8") == "us"  # unknown to the database: the default
    assert geo.region_for(None) == "us"  # no ECS: the resolver's own address (loopback)


def test_eu_west_down_moves_germany_to_eu_central_and_back(geo: GeoWorld) -> None:
    standin = geo.standins["eu-west"]
    t0 = time.monotonic()
    standin.kill()
    try:
        wait_for(lambda: geo.region_for(CLIENTS["DE"]) == "eu-central", BOUND, "DE -> eu-central")
        switched = time.monotonic() - t0
        assert geo.ask(CLIENTS["DE"]).addresses == tuple(ADDRESSES["eu-central"])
        assert geo.region_for(CLIENTS["US"]) == "us"  # nobody else moved
        assert geo.region_for(CLIENTS["JP"]) == "asia"
        assert geo.region_for("10.9.4.5") == "eu-central"
        assert not geo.region_healthy("eu-west")  # the edge said so, the front followed
        status = subprocess.run(
            [str(SKYLIFT), "dns", "status", "-c", str(geo.config), "-o", "json"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        state = json.loads(status.stdout)
        assert state["health"]["eu-west"] is False
        assert state["answers"]["DE"] == {
            "region": "eu-central",
            "home": "eu-west",
            "why": "failover",
        }
        change = next(c for c in state["changes"] if c["regions"] == {"eu-west": "down"})
        assert change["moved"] == {"DE": "eu-central", "FR": "eu-central", "GB": "eu-central"}
        assert 0 < change["since_first_check_s"] < BOUND, switched
    finally:
        standin.start()
    wait_for(lambda: geo.region_for(CLIENTS["DE"]) == "eu-west", BOUND + 1.0, "DE back home")
    assert geo.ask(CLIENTS["DE"]).addresses == ("127.0.1.2",)
