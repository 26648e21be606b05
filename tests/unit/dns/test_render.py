"""The zone PowerDNS reads, its pdns.conf, and the Route 53 / Cloudflare JSON."""

from __future__ import annotations

import json
from typing import Any

import yaml

from skylift.dns.answers import choose_answers
from skylift.dns.plan import DnsPlan
from skylift.dns.render import (
    cloudflare_load_balancing,
    records_document,
    render_pdns_conf,
    render_zone,
    route53_change_batch,
)
from tests.geodns_config import REGIONS, ZONE

ALL = frozenset(REGIONS)


def zone(plan: DnsPlan, up: frozenset[str] = ALL) -> dict[str, Any]:
    document = yaml.safe_load(render_zone(plan, choose_answers(plan.topology, up), serial=7))
    (domain,) = document["domains"]
    assert domain["domain"] == ZONE
    assert domain["ttl"] == 5
    return dict(domain)


def test_each_country_is_a_cname_to_its_regions_edge_and_the_service_asks_cc_first(
    plan: DnsPlan,
) -> None:
    domain = zone(plan)
    records = domain["records"]
    assert records[f"de.cc.{ZONE}"] == [{"cname": f"eu-west.edge.{ZONE}"}]
    assert records[f"us.cc.{ZONE}"] == [{"cname": f"us.edge.{ZONE}"}]
    assert records[f"jp.cc.{ZONE}"] == [{"cname": f"asia.edge.{ZONE}"}]
    assert records[f"default.cc.{ZONE}"] == [{"cname": f"us.edge.{ZONE}"}]
    assert records[f"eu-west.edge.{ZONE}"] == [{"a": "127.0.1.2"}, {"aaaa": "2001:db8:e::2"}]
    assert domain["services"] == {f"www.{ZONE}": [f"%cc.cc.{ZONE}", f"default.cc.{ZONE}"]}
    soa = records[ZONE][0]["soa"].split()
    assert soa[:3] == [f"ns1.{ZONE}", f"hostmaster.{ZONE}", "7"]
    assert soa[-1] == "5"  # negative answers cached no longer than the TTL
    assert records[ZONE][1] == {"ns": f"ns1.{ZONE}"}
    assert records[f"ns1.{ZONE}"] == [{"a": "127.0.0.1"}]


def test_an_outage_rewrites_only_the_moved_countries(plan: DnsPlan) -> None:
    before, after = zone(plan)["records"], zone(plan, ALL - {"eu-west"})["records"]
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {f"{cc}.cc.{ZONE}" for cc in ("de", "fr", "gb")}  # same serial here
    assert after[f"de.cc.{ZONE}"] == [{"cname": f"eu-central.edge.{ZONE}"}]


def test_pdns_conf_is_authoritative_local_and_quiet(plan: DnsPlan) -> None:
    conf = dict(line.split("=", 1) for line in render_pdns_conf(plan).splitlines() if "=" in line)
    assert conf["launch"] == "geoip"
    assert conf["geoip-database-files"] == f"mmdb:{plan.mmdb}"
    assert conf["geoip-zones-file"] == str(plan.zones_file)
    assert conf["edns-subnet-processing"] == "yes"
    assert (conf["local-address"], conf["local-port"]) == ("127.0.0.1", "18353")
    assert conf["security-poll-suffix"] == ""  # no query of its own leaves the machine
    assert conf["log-dns-queries"] == "no"
    assert conf["socket-dir"] == str(plan.socket_dir)


def test_route53_batch_has_a_geolocation_set_per_country_and_type_and_a_default(
    plan: DnsPlan,
) -> None:
    batch = route53_change_batch(plan, choose_answers(plan.topology, ALL - {"eu-west"}))
    sets = {
        (c["ResourceRecordSet"]["SetIdentifier"], c["ResourceRecordSet"]["Type"]): c[
            "ResourceRecordSet"
        ]
        for c in batch["Changes"]
    }
    de = sets[("skylift-DE", "A")]
    assert de["Name"] == f"www.{ZONE}."
    assert de["GeoLocation"] == {"CountryCode": "DE"}
    assert de["ResourceRecords"] == [{"Value": "127.0.1.3"}]  # eu-central, after the outage
    assert de["TTL"] == 5
    assert sets[("skylift-default", "A")]["GeoLocation"] == {"CountryCode": "*"}
    assert ("skylift-DE", "AAAA") not in sets  # eu-central has no IPv6 address
    assert {c["Action"] for c in batch["Changes"]} == {"UPSERT"}


def test_cloudflare_country_pools_are_the_in_zone_chain(plan: DnsPlan) -> None:
    cf = cloudflare_load_balancing(plan, choose_answers(plan.topology, ALL))
    (lb,) = cf["load_balancers"]
    assert lb["steering_policy"] == "geo"
    assert lb["country_pools"]["DE"] == ["<pool:eu-west>", "<pool:eu-central>"]
    assert lb["country_pools"]["JP"] == ["<pool:asia>"]
    assert lb["fallback_pool"] == "<pool:us>"
    origins = {p["name"]: [o["address"] for o in p["origins"]] for p in cf["pools"]}
    assert origins["skylift-eu-west"] == ["127.0.1.2", "2001:db8:e::2"]


def test_records_document_is_json_and_marked_untested(plan: DnsPlan) -> None:
    up = ALL - {"eu-west"}
    doc = json.loads(json.dumps(records_document(plan, choose_answers(plan.topology, up), up)))
    assert "untested" in doc["untested"]
    assert doc["answers"]["DE"] == {"region": "eu-central", "home": "eu-west", "why": "failover"}
    assert doc["answers"]["default"]["region"] == "us"
    assert doc["healthy"] == sorted(up)
