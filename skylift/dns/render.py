"""Render the geo-DNS front from a plan and the chosen answers: pure, text and data out.

PowerDNS's geoip backend (``launch=geoip``) reads two files rendered here:
``pdns.conf`` and the zone YAML. Layout of the zone (``Z`` = ``dns.zone``)::

    Z                 SOA, NS
    <region>.edge.Z   A/AAAA of that region's edge (always there, health or not)
    <cc>.cc.Z         CNAME <region>.edge.Z   one per country a region lists: its answer now
    default.cc.Z      CNAME <region>.edge.Z   unknown clients and unlisted countries
    www.Z             service: [%cc.cc.Z, default.cc.Z]  (the first that exists)

``%cc`` is the client's country (from the EDNS Client Subnet when the query
carries one, else the resolver's address) looked up in the MaxMind-format
database skylift builds from the edge's own map; a client the database does
not know gets ``unknown``, which has no record, so it falls through to the
default. Countries, not continents: the EU has two regions. A failover
rewrites only the CNAME targets.

The same answers are emitted as JSON for Route 53 (a geolocation change
batch) and Cloudflare (pools and a geo-steered load balancer): documented
formats, never sent anywhere by skylift and untested against those services.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

import yaml

from skylift.dns.answers import DEFAULT, Answer, GeoAnswers
from skylift.dns.plan import DnsPlan
from skylift.regions.rules import failover_chain

GEO_LABEL = "cc"
EDGE_LABEL = "edge"
UNTESTED = (
    "untested against the real services: these are the documented request bodies of "
    "Route 53 ChangeResourceRecordSets (geolocation records) and Cloudflare load balancing "
    "(pools + a geo-steered load balancer); skylift never calls either API"
)
SOA_TIMERS = "7200 3600 1209600"  # refresh, retry, expire: only secondaries read them


def edge_name(plan: DnsPlan, region: str) -> str:
    return f"{region}.{EDGE_LABEL}.{plan.zone}"


def country_name(plan: DnsPlan, country: str) -> str:
    return f"{country.lower()}.{GEO_LABEL}.{plan.zone}"


def _address_records(addresses: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"aaaa" if ipaddress.ip_address(a).version == 6 else "a": a} for a in sorted(addresses)]


def zone_document(plan: DnsPlan, answers: GeoAnswers, serial: int) -> dict[str, Any]:
    """The geoip backend's zone file as data (``domains: [...]``)."""
    zone = plan.zone
    ns_first = plan.nameservers[0][0]
    apex: list[dict[str, str]] = [
        {"soa": f"{ns_first} hostmaster.{zone} {serial} {SOA_TIMERS} {plan.ttl}"},
        *({"ns": name} for name, _ in plan.nameservers),
    ]
    records: dict[str, list[dict[str, str]]] = {zone: apex}
    for name, glue in plan.nameservers:
        if glue is not None and name != zone:
            records[name] = _address_records((glue,))
    for region in plan.topology.names:
        records[edge_name(plan, region)] = _address_records(plan.addresses[region])
    for country, answer in answers.countries:
        records[country_name(plan, country)] = [{"cname": edge_name(plan, answer.region)}]
    default = f"{DEFAULT}.{GEO_LABEL}.{zone}"
    records[default] = [{"cname": edge_name(plan, answers.default.region)}]
    formats = [f"%cc.{GEO_LABEL}.{zone}", default]
    services = {f"{name}.{zone}": list(formats) for name in plan.names}
    return {
        "domains": [{"domain": zone, "ttl": plan.ttl, "records": records, "services": services}]
    }


def render_zone(plan: DnsPlan, answers: GeoAnswers, serial: int) -> str:
    """The zone YAML PowerDNS reads (``geoip-zones-file``), with a header saying why."""
    why = (
        ", ".join(f"{c}->{a.region}" for c, a in answers.countries if a.why != "home")
        or "every country at home"
    )
    head = (
        f"# rendered by skylift (dns) for {plan.zone}, serial {serial}: edit the config, not "
        f"this file\n# moved: {why}; default -> {answers.default.region} ({answers.default.why})\n"
    )
    body = yaml.safe_dump(zone_document(plan, answers, serial), sort_keys=False, width=200)
    return head + body


def render_pdns_conf(plan: DnsPlan) -> str:
    """``pdns.conf`` for a PowerDNS run in its own directory, authoritative only.

    PowerDNS 4.x authoritative never recurses. Nothing leaves the machine
    (``security-poll-suffix=`` empty turns off its version check by DNS), and
    no query is logged: the client subnets it sees stay in memory.
    """
    d = plan.state_dir
    lines = [
        f"# rendered by skylift (dns) for {plan.zone}: run `pdns_server --config-dir={d}`",
        "launch=geoip",
        f"geoip-database-files=mmdb:{plan.mmdb}",
        f"geoip-zones-file={plan.zones_file}",
        "edns-subnet-processing=yes",
        f"local-address={plan.listen_host}",
        f"local-port={plan.listen_port}",
        f"socket-dir={plan.socket_dir}",
        "daemon=no",
        "guardian=no",
        "disable-syslog=yes",
        "loglevel=4",
        "log-dns-queries=no",
        "log-dns-details=no",
        "query-logging=no",
        "security-poll-suffix=",
        "disable-axfr=yes",
        "webserver=no",
        "api=no",
        "version-string=anonymous",
    ]
    return "\n".join(lines) + "\n"


def _rrsets(
    plan: DnsPlan, name: str, ident: str, geo: Mapping[str, str], answer: Answer
) -> list[dict[str, Any]]:
    by_type: dict[str, list[str]] = {}
    for address in sorted(plan.addresses[answer.region]):
        rtype = "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
        by_type.setdefault(rtype, []).append(address)
    return [
        {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": f"{name}.",
                "Type": rtype,
                "SetIdentifier": f"skylift-{ident}",
                "GeoLocation": dict(geo),
                "TTL": plan.ttl,
                "ResourceRecords": [{"Value": v} for v in values],
            },
        }
        for rtype, values in by_type.items()
    ]


def route53_change_batch(plan: DnsPlan, answers: GeoAnswers) -> dict[str, Any]:
    """A ChangeResourceRecordSets body: one geolocation record set per country, plus ``*``.

    Route 53 does not fail these over by itself: apply a new batch after an
    outage (what ``skylift dns serve`` does to PowerDNS's zone).
    """
    changes: list[dict[str, Any]] = []
    for name in plan.names:
        fqdn = f"{name}.{plan.zone}"
        for country, answer in answers.countries:
            changes += _rrsets(plan, fqdn, country, {"CountryCode": country}, answer)
        changes += _rrsets(plan, fqdn, DEFAULT, {"CountryCode": "*"}, answers.default)
    return {"Comment": f"skylift geo answers for {plan.zone}", "Changes": changes}


def cloudflare_load_balancing(plan: DnsPlan, answers: GeoAnswers) -> dict[str, Any]:
    """Pools (one per region's edge) and a geo-steered load balancer per name.

    ``country_pools`` lists each country's in-zone failover chain, so
    Cloudflare's own monitors fail over inside the zone. Unlike the PowerDNS
    answers, Cloudflare sends clients to ``fallback_pool`` (here the default
    region) when every listed pool is down, which crosses zones: pool ids are
    placeholders ``<pool:REGION>`` to replace with the ids Cloudflare returns.
    """
    topo = plan.topology
    pools = [
        {
            "name": f"skylift-{region}",
            "origins": [
                {"name": f"{region}-{i}", "address": a, "enabled": True}
                for i, a in enumerate(sorted(plan.addresses[region]))
            ],
        }
        for region in topo.names
    ]
    country_pools = {
        country: [f"<pool:{r}>" for r in failover_chain(topo, answer.home)]
        for country, answer in answers.countries
    }
    balancers = [
        {
            "name": f"{name}.{plan.zone}",
            "steering_policy": "geo",
            "proxied": False,
            "ttl": plan.ttl,
            "country_pools": country_pools,
            "default_pools": [f"<pool:{r}>" for r in failover_chain(topo, topo.default)],
            "fallback_pool": f"<pool:{topo.default}>",
        }
        for name in plan.names
    ]
    return {"pools": pools, "load_balancers": balancers}


def records_document(plan: DnsPlan, answers: GeoAnswers, healthy: frozenset[str]) -> dict[str, Any]:
    """What ``skylift dns records -o json`` prints: the answers, Route 53 and Cloudflare."""
    return {
        "zone": plan.zone,
        "names": [f"{n}.{plan.zone}" for n in plan.names],
        "ttl": plan.ttl,
        "healthy": sorted(healthy),
        "answers": answers.as_dict(),
        "edges": {r: list(plan.addresses[r]) for r in plan.topology.names},
        "untested": UNTESTED,
        "route53": route53_change_batch(plan, answers),
        "cloudflare": cloudflare_load_balancing(plan, answers),
    }


def answers_json(answers: GeoAnswers) -> str:
    return json.dumps(answers.as_dict(), sort_keys=True)
