"""The platform's regional parts without servers: topology file, settings, signing, keys."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from skylift.platform import peers
from skylift.platform.directory import email_hash, valid_hash
from skylift.platform.errors import AuthError, Unavailable
from skylift.platform.keys import Keyring, ensure_key
from skylift.platform.peerkeys import PeerKeys, parse_jwks
from skylift.platform.regional import Regional
from skylift.platform.routes_regions import forward_login
from skylift.platform.settings import PlatformSettings, SettingsError
from skylift.platform.tokens import issue_access, verify_access
from skylift.platform.topology import TopologyError, parse_topology

TOPOLOGY: dict[str, Any] = {
    "default": "us",
    "mode": "geo",
    "regions": [
        {"name": "eu-west", "zone": "eu", "countries": ["fr"], "nearest": ["eu-central"],
         "standby_of": None, "edge": "10.0.0.1:8443"},
        {"name": "eu-central", "zone": "eu", "countries": ["DE"], "nearest": ["eu-west"],
         "standby_of": "eu-west", "edge": "10.0.0.2:8443"},
        {"name": "us", "zone": "us", "countries": ["US"], "edge": "10.0.0.3:8443"},
    ],
}  # fmt: skip


def test_topology_file_becomes_the_shared_rules_topology_and_edges() -> None:
    regions = parse_topology(TOPOLOGY)
    topology = regions.topology
    assert topology.names == ("eu-west", "eu-central", "us")
    assert topology.country_region("FR") == "eu-west"  # countries upper-cased
    assert topology.standby_holder("eu-west") == "eu-central"
    assert regions.edges["us"] == "10.0.0.3:8443"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"regions": []}, "non-empty"),
        ({"default": "mars"}, "default region"),
        ({"mode": "fastest"}, "mode"),
        ({"regions": [{"name": "x", "zone": "z", "edge": "nohost"}]}, "HOST:PORT"),
    ],
)
def test_a_malformed_topology_names_what_is_wrong(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_topology({**TOPOLOGY, **change})


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "topology.json").write_text(json.dumps(TOPOLOGY))
    (tmp_path / "dirkey").write_text("k" * 32)
    return {
        "SKYLIFT_PLATFORM_DATABASE_URL": "postgresql://db/app",
        "SKYLIFT_PLATFORM_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SKYLIFT_PLATFORM_TOPOLOGY_FILE": str(tmp_path / "topology.json"),
        "SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE": str(tmp_path / "dirkey"),
        **extra,
    }


def test_settings_read_the_topology_and_check_it_against_the_region(tmp_path: Path) -> None:
    settings = PlatformSettings.from_env(
        _env(
            tmp_path,
            SKYLIFT_PLATFORM_REGION="eu-central",
            SKYLIFT_PLATFORM_STANDBY_DATABASE_URL="postgresql://u:secret@standby/app",
        )
    )
    assert settings.regions is not None and settings.regions.topology.default == "us"
    assert settings.directory_key() == b"k" * 32
    assert "secret" not in repr(settings)
    with pytest.raises(SettingsError, match="not a region of the topology"):
        PlatformSettings.from_env(_env(tmp_path, SKYLIFT_PLATFORM_REGION="mars"))
    with pytest.raises(SettingsError, match="no standby_of"):
        PlatformSettings.from_env(
            _env(
                tmp_path,
                SKYLIFT_PLATFORM_REGION="us",
                SKYLIFT_PLATFORM_STANDBY_DATABASE_URL="postgresql://standby/app",
            )
        )
    without_key = _env(tmp_path, SKYLIFT_PLATFORM_REGION="us")
    del without_key["SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE"]
    with pytest.raises(SettingsError, match="DIRECTORY_KEY_FILE"):
        PlatformSettings.from_env(without_key)


def test_without_a_topology_the_platform_is_one_region_as_before() -> None:
    settings = PlatformSettings.from_env(
        {"SKYLIFT_PLATFORM_DATABASE_URL": "postgresql://db/app", "SKYLIFT_PLATFORM_REDIS_URL": "r"}
    )
    assert settings.regions is None and settings.standby_database_url is None


def test_peer_signatures_bind_the_request_and_expire() -> None:
    key = peers.peer_key(b"d" * 32)
    now = int(time.time())
    sig = peers.sign(key, method="POST", path="/p", body=b"{}", now=now, signed=("eu-west",))
    ok = {"method": "POST", "path": "/p", "body": b"{}", "signed": ("eu-west",)}
    assert peers.verify(key, sig, now=now, **ok)  # type: ignore[arg-type]
    assert not peers.verify(key, sig, now=now + peers.WINDOW + 1, **ok)  # type: ignore[arg-type]
    assert not peers.verify(key, sig, method="POST", path="/p", body=b"[]", now=now,
                            signed=("eu-west",))  # fmt: skip
    assert not peers.verify(key, sig, method="POST", path="/p", body=b"{}", now=now,
                            signed=("us",))  # fmt: skip
    assert not peers.verify(peers.peer_key(b"e" * 32), sig, now=now, **ok)  # type: ignore[arg-type]
    assert not peers.verify(key, "garbage", now=now, **ok)  # type: ignore[arg-type]


def test_the_directory_hash_is_keyed_and_holds_no_email() -> None:
    a = email_hash(b"k" * 32, "ada@example.com")
    assert valid_hash(a) and "ada" not in a
    assert a != email_hash(b"j" * 32, "ada@example.com")


def test_a_peer_token_verifies_only_with_its_own_regions_issuer(tmp_path: Path) -> None:
    ensure_key(tmp_path / "west")
    ensure_key(tmp_path / "us")
    west, us = Keyring(tmp_path / "west"), Keyring(tmp_path / "us")
    now = int(time.time())
    jwks = parse_jwks({**west.jwks(), "region": "eu-west"}, "eu-west")
    assert parse_jwks({**west.jwks(), "region": "eu-central"}, "eu-west") == {}  # wrong answerer
    found = {kid: (key, "eu-west") for kid, key in jwks.items()}
    token = issue_access(
        west, sub="u1", home_region="eu-west", region="eu-west", ttl=60, now=now, xr="us"
    )
    claims = verify_access(token, us, "us", peers=found.get)
    assert (claims.home_region, claims.xr, claims.issuer_region) == ("eu-west", "us", "eu-west")
    with pytest.raises(AuthError):
        verify_access(token, us, "us")  # without the peer's keys
    # signed with eu-west's key but claiming another issuer: refused
    forged = issue_access(west, sub="u1", home_region="eu-west", region="us", ttl=60, now=now)
    with pytest.raises(AuthError):
        verify_access(forged, us, "us", peers=found.get)
    # a JWK whose kid is not its thumbprint is ignored
    bad = west.jwks()
    bad["keys"][0]["kid"] = "chosen-by-attacker"
    assert parse_jwks(bad, "eu-west") == {}
    assert "xr" not in jwt.decode(
        issue_access(west, sub="u", home_region="eu-west", region="eu-west", ttl=60, now=now),
        options={"verify_signature": False},
    )


async def test_peer_keys_are_fetched_through_edges_kept_on_disk_and_read_back(
    tmp_path: Path,
) -> None:
    ensure_key(tmp_path / "west")
    west = Keyring(tmp_path / "west")
    kid = west.signing.kid
    asked: list[tuple[str, str | None]] = []

    def edge(request: httpx.Request) -> httpx.Response:
        asked.append((request.url.host, request.headers.get("x-skylift-region")))
        if request.url.host == "west":
            return httpx.Response(200, json={**west.jwks(), "region": "eu-west"})
        return httpx.Response(200, json={**west.jwks(), "region": "eu-west"})  # not eu-central!

    edges = {"eu-west": "west:1", "eu-central": "central:1", "us": "us:1"}
    cache = tmp_path / "peer-jwks"
    async with httpx.AsyncClient(transport=httpx.MockTransport(edge)) as client:
        keys = PeerKeys("us", edges, client, cache)
        assert await keys.resolve(kid) is not None
    assert ("west", "eu-west") in asked and ("central", "eu-central") in asked  # selector set
    assert keys.known() == {"eu-west": True, "eu-central": False}  # a wrong answerer is ignored
    assert (cache / "eu-west.json").is_file() and not (cache / "eu-central.json").exists()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as client:
        restarted = PeerKeys("us", edges, client, cache)  # every peer down: the copy on disk
        await restarted.fetch_all()
        found = restarted.lookup(kid)
    assert found is not None and found[1] == "eu-west"


async def test_a_forwarded_login_goes_home_or_along_the_homes_zone_never_elsewhere() -> None:
    regions = parse_topology(TOPOLOGY)
    key = peers.peer_key(b"d" * 32)
    seen: list[httpx.Request] = []

    def edges(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "10.0.0.1":  # eu-west's host is cut off
            raise httpx.ConnectError("unreachable", request=request)
        return httpx.Response(
            200, json={"access_token": "t"}, headers={"cache-control": "no-store"}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(edges)) as client:
        regional = Regional("us", regions, b"d" * 32, key, client, None, None)  # type: ignore[arg-type]
        body = b'{"email": "a@b.fr", "password": "x"}'
        answer = await forward_login(regional, "eu-west", body, "203.0.113.9", 2)
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert [r.url.host for r in seen] == ["10.0.0.1", "10.0.0.2"]  # eu-west, then eu-central
    sent = seen[-1]
    assert sent.headers["x-skylift-region"] == "eu-west"  # the edge routes by the home
    assert peers.verify(
        key,
        sent.headers[peers.SIGNATURE],
        method="POST",
        path="/auth/login",
        body=body,
        now=int(time.time()),
        signed=("us", "203.0.113.9"),
    )

    def cut(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("unreachable", request=request)

    seen.clear()
    async with httpx.AsyncClient(transport=httpx.MockTransport(cut)) as client:
        regional = Regional("us", regions, b"d" * 32, key, client, None, None)  # type: ignore[arg-type]
        with pytest.raises(Unavailable):
            await forward_login(regional, "eu-west", body, "203.0.113.9", 2)
    assert "10.0.0.3" not in [r.url.host for r in seen]  # never to us: another zone
