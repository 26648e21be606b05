"""The edge's rendered HAProxy: pure checks of what it routes and trusts."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from skylift.edge.render import (
    BACKENDS_MAP,
    COUNTRY_MAP,
    EXTRA_GEO_MAP,
    LATENCY_MAP,
    REGIONS_MAP,
    backend_keys,
    chains,
    home_backend,
    key_file,
    render_edge,
)
from skylift.edge.spec import EdgeSpec
from skylift.regions.rules import RegionFacts, Topology, failover_chain

TOPO = Topology(
    regions=(
        RegionFacts("us", "us", frozenset({"US"}), ("eu-west", "eu-central", "asia")),
        RegionFacts("eu-west", "eu", frozenset({"FR"}), ("eu-central", "us", "asia")),
        RegionFacts(
            "eu-central", "eu", frozenset({"DE", "FR"}), ("eu-west",), standby_of="eu-west"
        ),
        RegionFacts("asia", "asia", frozenset({"JP"}), ("us",)),
    ),
    default="us",
    mode="latency",
)


def spec(**changes: object) -> EdgeSpec:
    base = EdgeSpec(
        region="us",
        topology=TOPO,
        listen="0.0.0.0:8443",
        local="127.0.0.1:8080",
        peers={"eu-west": "10.0.0.2:8443", "eu-central": "10.0.0.3:8443", "asia": "10.0.0.4:8443"},
        trusted_peers=frozenset({"10.0.0.2", "10.0.0.3", "10.0.0.4"}),
        state_dir=Path("/var/lib/skylift/edge"),
        token_keys={"kidA": "-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n"},
        extra_countries={"192.168.0.0/16": "de"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def backend_block(config: str, name: str) -> list[str]:
    block = config.split(f"\nbackend {name}\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()


def test_one_backend_per_chain_in_failover_order() -> None:
    files = render_edge(spec())
    for home in TOPO.names:
        servers = [
            line.split()[1]
            for line in backend_block(files.config, home_backend(home))
            if line.strip().startswith("server ")
        ]
        assert tuple(servers) == failover_chain(TOPO, home)
        backups = [
            "backup" in line.split()
            for line in backend_block(files.config, home_backend(home))
            if line.strip().startswith("server ")
        ]
        assert backups == [False] + [True] * (len(servers) - 1)
    # the eu-west user who opted in to us: eu-west, eu-central, then us (own pool)
    pair = backend_block(files.config, home_backend("eu-west", "us"))
    servers = [line.split() for line in pair if line.strip().startswith("server ")]
    assert [s[1] for s in servers] == ["eu-west", "eu-central", "us"]
    assert servers[0][2] == "10.0.0.2:8443" and servers[2][2] == "127.0.0.1:8080"


def test_pairs_whose_chain_is_unchanged_share_the_home_backend() -> None:
    keys = backend_keys(spec())
    assert keys["eu-west/eu-central"] == home_backend("eu-west")  # same zone: no new chain
    assert keys["eu-west/us"] == home_backend("eu-west", "us")
    assert set(keys.values()) == set(chains(spec()))
    files = render_edge(spec())
    lines = files.files[BACKENDS_MAP].splitlines()
    assert "eu-west/us be_home_eu-west__xr__us" in lines
    # use_backend only ever goes through the whitelist, with a safe default
    assert re.search(
        r"use_backend %\[var\(txn.bekey\),map\(\S+backends.map,be_unknown\)\]", files.config
    )


def test_maps_and_keys() -> None:
    files = render_edge(spec())
    assert files.files[REGIONS_MAP].splitlines() == [f"{n} {n}" for n in TOPO.names]
    # FR belongs to eu-west, the first region (config order) that lists it
    assert "FR eu-west" in files.files[COUNTRY_MAP].splitlines()
    assert files.files[EXTRA_GEO_MAP] == "192.168.0.0/16 DE\n"
    assert files.files[LATENCY_MAP] == ""
    assert files.files[key_file("kidA")].startswith("-----BEGIN PUBLIC KEY-----")
    assert key_file("kidA") not in files.maps and LATENCY_MAP in files.maps


def test_token_is_es256_pinned_per_kid_with_exp_and_iss() -> None:
    config = render_edge(spec()).config
    assert 'jwt_verify("ES256","/var/lib/skylift/edge/keys/kidA.pem")' in config
    assert "{ var(txn.kid) -m str -- kidA }" in config
    assert "sub(txn.now) gt 0" in config  # exp compared with date()
    assert "skylift-platform/eu-west" in config
    assert re.search(r"return status 401 .* if !pt has_token !token_ok", config)


def test_hop_trusted_only_from_peers_and_owned_headers_stripped() -> None:
    config = render_edge(spec()).config
    assert "acl from_peer src 10.0.0.2 10.0.0.3 10.0.0.4" in config
    assert "set-var(txn.hop) bool(true) if from_peer hop_in" in config
    for header in ("X-Skylift-Hop", "X-Skylift-Home", "X-Skylift-Route", "X-Skylift-Country"):
        assert f"http-request del-header {header} if !hop" in config
    no_peers = render_edge(spec(trusted_peers=frozenset())).config
    assert "acl from_peer always_false" in no_peers


def test_signup_never_uses_latency_and_geo_mode_has_no_latency_rule() -> None:
    config = render_edge(spec()).config
    assert "!{ path /auth/signup }" in config
    geo = render_edge(spec(topology=replace(TOPO, mode="geo"))).config
    assert "latency.map" not in geo


def test_documented_503_everywhere_haproxy_answers() -> None:
    config = render_edge(spec(retry_after=7)).config
    block = "\n".join(backend_block(config, home_backend("eu-west")))
    assert "if { nbsrv() eq 0 }" in block
    assert '"error":"region_unavailable"' in block
    assert "not opted in to cross-zone failover" in block
    for code in (502, 503, 504):
        assert f"http-error status {code} content-type application/json" in block
    assert "hdr Retry-After 7" in block
    assert "http-after-response set-status 503 if { res.hdr(X-Skylift-Error) -m found }" in config


def test_reload_fingerprint_ignores_maps_but_not_keys() -> None:
    a = render_edge(spec())
    b = render_edge(spec(extra_countries={"10.0.0.0/8": "FR"}))
    assert a.reload_fingerprint == b.reload_fingerprint
    c = render_edge(spec(token_keys={"kidA": "x", "kidB": "y"}))
    assert c.reload_fingerprint != a.reload_fingerprint
    d = render_edge(spec(token_keys={"kidA": "other"}))
    assert d.config == a.config and d.reload_fingerprint != a.reload_fingerprint


@pytest.mark.parametrize(
    "changes",
    [
        {"listen": "nowhere"},
        {"peers": {"eu-west": "10.0.0.2:1"}},  # missing peers
        {"state_dir": Path("relative")},
        {"token_keys": {"bad kid": "x"}},
        {"extra_countries": {"10.0.0.0/8": "DEU"}},
        {"trusted_peers": frozenset({"10.0.0.1 || 1"})},
        {"region": "mars"},
    ],
)
def test_invalid_specs_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        render_edge(spec(**changes))
