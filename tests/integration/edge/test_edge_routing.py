"""The edge routes as documented: token > selector > geo > latency > default."""

from __future__ import annotations

from edge_world import STRANGER, World, client


def test_token_route_across_edges(world: World) -> None:
    with client() as http:
        r = http.get(world.url("us"), headers={"Authorization": f"Bearer {world.token('eu-west')}"})
    assert r.status_code == 200, r.text
    assert r.json()["region"] == "eu-west"
    assert r.headers["X-Skylift-Region"] == "eu-west"
    assert r.headers["X-Skylift-Route"] == "token"
    sent = r.json()["headers"]
    assert sent["x-skylift-home"] == "eu-west"
    assert sent["x-skylift-route"] == "token"
    assert sent["x-skylift-hop"] == "us"


def test_selector_header_and_cookie(world: World) -> None:
    with client() as http:
        r = http.get(world.url("us"), headers={"X-Skylift-Region": "asia"})
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("asia", "selector")
        http.cookies.set("skylift_region", "eu-central")
        r = http.get(world.url("asia"))
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("eu-central", "selector")
        assert r.headers["X-Skylift-Region"] == "eu-central"
        # an unknown value is not a region: it falls through to the next rule, never a backend
        http.cookies.clear()
        r = http.get(world.url("us"), headers={"X-Skylift-Region": "be_local"})
        assert r.headers["X-Skylift-Route"] == "default"
        assert r.json()["region"] == "us"


def test_geo_by_source_address(world: World) -> None:
    for source, region in (
        ("127.0.0.2", "eu-central"),
        ("127.0.0.3", "asia"),
        ("127.0.0.4", "eu-west"),
    ):
        with client(source) as http:
            r = http.get(world.url("us"))
        assert r.status_code == 200
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == (region, "geo"), source
        assert r.json()["headers"]["x-skylift-country"] in ("DE", "JP", "FR")


def test_default_then_latency_mode(world: World) -> None:
    # a country no region serves (BR), and no latency measured yet: the default
    with client("127.0.0.6") as http:
        r = http.get(world.url("asia"))
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("us", "default")
        world.run(world.edges["asia"].set_latency_best("asia"))
        r = http.get(world.url("asia"))
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("asia", "latency")
        # signup is placed by jurisdiction, never by speed
        r = http.post(world.url("asia", "/auth/signup"), json={})
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("us", "default")
        world.run(world.edges["asia"].set_latency_best("eu-central"))
        r = http.get(world.url("asia"))
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("eu-central", "latency")


def test_forged_tokens_are_refused(world: World) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    good = world.token("eu-west")
    head, body, sig = good.split(".")
    import base64
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    edited = b64(json.dumps({**claims, "home_region": "us"}).encode())
    none_head = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    forged = {
        "alg none": f"{none_head}.{body}.",
        "wrong key": world.token("eu-west", key=ec.generate_private_key(ec.SECP256R1())),
        "expired": world.token("eu-west", exp_in=-5),
        "home_region edited": f"{head}.{edited}.{sig}",
        "unknown kid": world.token("eu-west", kid="k9"),
        "foreign issuer": world.token("eu-west", iss_region="mars"),
        "garbage": "not-a-jwt",
    }
    with client() as http:
        for what, token in forged.items():
            r = http.get(world.url("us"), headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, what
            assert r.json() == {"error": "invalid_token"}, what
            assert r.headers["content-type"] == "application/json"


def test_hop_header_from_a_stranger_is_ignored(world: World) -> None:
    forged = {"X-Skylift-Hop": "eu-west", "X-Skylift-Home": "eu-west", "X-Skylift-Route": "token"}
    with client(STRANGER) as http:
        r = http.get(world.url("eu-central"), headers=forged)
    # not served locally as a hop: routed like any anonymous request (default us)
    assert r.json()["region"] == "us"
    assert r.headers["X-Skylift-Route"] == "default"
    assert r.json()["headers"]["x-skylift-hop"] == "eu-central"
    assert r.json()["headers"]["x-skylift-home"] == "us"


def test_opted_in_user_goes_to_fallback_only_when_zone_is_down_and_xr_is_kept(world: World) -> None:
    # with eu up, an opted-in eu-west user is served at home
    token = world.token("eu-west", xr="us")
    with client() as http:
        r = http.get(world.url("asia"), headers={"Authorization": f"Bearer {token}"})
    assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("eu-west", "token")
