"""JWKS -> PEM, the geoip map builder and its command, the latency choice: pure or local."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from skylift.cli import app as cli_app
from skylift.edge.geoip import build_map, parse_extra, row_cidrs
from skylift.edge.keys import fetch_all, jwk_to_pem, jwks_to_pems, merge
from skylift.edge.latency import best_region
from skylift.platform.keys import ensure_key, load_keys, rotate

DATA = Path(__file__).with_name("data")


def test_platform_jwks_become_pems_that_verify_its_tokens(tmp_path: Path) -> None:
    key = ensure_key(tmp_path)
    token = jwt.encode({"sub": "u"}, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    pems = jwks_to_pems({"keys": [key.public_jwk()]})
    assert list(pems) == [key.kid]
    assert jwt.decode(token, pems[key.kid], algorithms=["ES256"])["sub"] == "u"


def test_rotation_publishes_both_keys(tmp_path: Path) -> None:
    ensure_key(tmp_path)
    rotate(tmp_path)
    doc = {"keys": [k.public_jwk() for k in load_keys(tmp_path)]}
    assert len(jwks_to_pems(doc)) == 2


def test_non_es256_or_private_jwks_are_refused() -> None:
    with pytest.raises(ValueError):
        jwk_to_pem({"kty": "RSA", "n": "x", "e": "AQAB"})
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private))
    with pytest.raises(ValueError):
        jwk_to_pem(jwk)
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    assert jwks_to_pems({"keys": [public, {**public, "kid": "x", "kty": "RSA"}]}) == {}
    assert list(jwks_to_pems({"keys": [{**public, "kid": "x"}]})) == ["x"]


def test_merge_drops_a_kid_published_with_two_keys() -> None:
    assert merge({"us": {"a": "1", "b": "2"}, "eu": {"a": "1", "b": "3", "c": "4"}}) == {
        "a": "1",
        "c": "4",
    }


async def test_fetch_all_keeps_previous_keys_of_an_unreachable_region(tmp_path: Path) -> None:
    key = ensure_key(tmp_path)

    def handler(request: httpx.Request) -> httpx.Response:
        region = request.headers["X-Skylift-Region"]
        if region == "us":
            return httpx.Response(200, json={"keys": [key.public_jwk()]})
        if region == "asia":  # failed over to another region: not asia's keys
            return httpx.Response(200, json={"keys": []}, headers={"X-Skylift-Region": "us"})
        raise httpx.ConnectError("down", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        got = await fetch_all(
            {r: "http://edge/.well-known/jwks.json" for r in ("us", "eu", "asia")},
            previous={"eu": {"old": "PEM"}, "asia": {"a": "PEM"}},
            client=client,
        )
    assert list(got["us"]) == [key.kid]
    assert got["eu"] == {"old": "PEM"}
    assert got["asia"] == {"a": "PEM"}


def test_ranges_become_exact_cidrs() -> None:
    found = row_cidrs(["198.51.100.0", "198.51.100.9", "de"])
    assert found is not None
    assert [(str(n), cc) for n, cc in found] == [
        ("198.51.100.0/29", "DE"),
        ("198.51.100.8/31", "DE"),
    ]
    assert row_cidrs(["2001:db8::", "2001:db8::ff", "US"]) is not None
    assert row_cidrs(["3405803776", "3405804031", "AU"], v6_hint=False) is not None  # -num
    assert row_cidrs(["10.0.0.9", "10.0.0.1", "US"]) is None
    assert row_cidrs(["10.0.0.1", "2001:db8::", "US"]) is None
    assert row_cidrs(["10.0.0.1", "10.0.0.2", "USA"]) is None


def test_build_map_from_the_npm_tarball_with_extras(tmp_path: Path) -> None:
    tgz = tmp_path / "geo.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in ("geo-whois-asn-country-ipv4.csv", "geo-whois-asn-country-ipv6.csv"):
            data = (DATA / name).read_bytes()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "geo.map"
    stats = build_map(tgz, out, parse_extra(["192.0.2.0/24=GB", "10.0.0.0/8=de"]))
    lines = out.read_text().splitlines()
    assert "192.0.2.0/24 GB" in lines and "192.0.2.0/24 FR" not in lines
    assert "10.0.0.0/8 DE" in lines
    assert "2001:db8::/48 US" in lines and "2001:db8:1::/120 JP" in lines
    assert stats.skipped == 2 and stats.extra == 2


def test_parse_extra_refuses_bad_entries() -> None:
    for bad in ("10.0.0.0/8", "10.0.0.0/8=DEU", "nonsense=DE"):
        with pytest.raises(ValueError):
            parse_extra([bad])


def test_geoip_update_command(tmp_path: Path) -> None:
    out = tmp_path / "geo.map"
    result = CliRunner().invoke(
        cli_app.app,
        [
            "geoip", "update",
            "--source", str(DATA / "geo-whois-asn-country-ipv4.csv"),
            "--out", str(out),
            "--extra", "127.0.0.2/32=DE",
            "-o", "json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["cidrs"] == 4
    assert out.read_text().splitlines()[1] == "127.0.0.2/32 DE"
    bad = CliRunner().invoke(
        cli_app.app, ["geoip", "update", "--source", "x.csv", "--out", str(out), "--extra", "1"]
    )
    assert bad.exit_code == 2
    missing = CliRunner().invoke(
        cli_app.app, ["geoip", "update", "--source", str(tmp_path / "none.csv"), "--out", str(out)]
    )
    assert missing.exit_code == 1


def test_best_region_is_the_fastest_with_hysteresis_and_order_for_ties() -> None:
    order = ("us", "eu-west", "asia")
    assert best_region({"us": 0.09, "eu-west": 0.01, "asia": None}, order) == "eu-west"
    assert best_region({"us": None}, order) is None
    assert best_region({"us": 0.01, "asia": 0.01}, order) == "us"
    # keep the current choice unless another is faster by more than the hysteresis
    assert best_region({"us": 0.012, "eu-west": 0.010}, order, "us", 0.005) == "us"
    assert best_region({"us": 0.030, "eu-west": 0.010}, order, "us", 0.005) == "eu-west"
    assert best_region({"us": None, "eu-west": 0.010}, order, "us", 0.005) == "eu-west"


async def test_key_refresher_applies_only_when_the_keys_change(tmp_path: Path) -> None:
    from skylift.edge.keys import KeyRefresher
    from skylift.edge.spec import EdgeSpec
    from skylift.regions.rules import RegionFacts, Topology

    topo = Topology((RegionFacts("us", "us"),), default="us")
    ensure_key(tmp_path)

    class FakeEdge:
        def __init__(self) -> None:
            self.spec = EdgeSpec(
                "us", topo, "127.0.0.1:1", "127.0.0.1:2", {}, frozenset(), tmp_path
            )
            self.applied = 0

        async def apply(self, spec: EdgeSpec) -> None:
            self.spec = spec
            self.applied += 1

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [k.public_jwk() for k in load_keys(tmp_path)]})

    edge = FakeEdge()
    refresher = KeyRefresher(edge, {"us": "http://us/.well-known/jwks.json"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        assert await refresher.refresh_once(client)
        assert not await refresher.refresh_once(client)  # unchanged: no reload
        new = rotate(tmp_path)
        assert await refresher.refresh_once(client)
    assert new.kid in edge.spec.token_keys and len(edge.spec.token_keys) == 2
    assert edge.applied == 2
