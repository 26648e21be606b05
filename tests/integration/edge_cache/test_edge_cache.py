"""The edge cache against a real edge HAProxy and origins that count their own hits.

Two regions of one zone (eu-west, eu-central), each an edge and an origin;
every test talks to eu-west's edge, anonymous requests are homed on eu-west
(the default). "Served from the edge" means the origin's counter did not move.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from skylift.cli.app import app
from skylift.config import load_config
from skylift.edge.cache import CACHE_HEADER, EdgeCache
from skylift.edge.runner import Edge
from skylift.edge.spec import EdgeSpec
from skylift.regions.config import edge_spec
from skylift.regions.rules import RegionFacts, Topology
from tests.fixtures.region_process import RegionProcess
from tests.polling import wait_for
from tests.ports import free_port

ORIGIN = Path(__file__).with_name("origin.py")
HOME, OTHER = "eu-west", "eu-central"
TOPOLOGY = Topology(
    regions=(
        RegionFacts(HOME, "eu", frozenset({"FR"}), (OTHER,)),
        RegionFacts(OTHER, "eu", frozenset({"DE"}), (HOME,)),
    ),
    default=HOME,
    mode="geo",
)
CACHE = EdgeCache(paths=("/static/", "/favicon.ico"), max_age=60, bypass_cookies=("sid",))


class Origin(RegionProcess):
    script = ORIGIN

    def hits(self, path: str) -> int:
        r = httpx.get(f"http://127.0.0.1:{self.port}/_hits", timeout=3.0, trust_env=False)
        return int(r.json().get(path, 0))


@dataclass
class CacheWorld:
    specs: dict[str, EdgeSpec]
    edges: dict[str, Edge]
    origins: dict[str, Origin]
    key: ec.EllipticCurvePrivateKey
    config: Path  # the regions file the CLI reads (state dirs and edge.cache)

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        url = f"http://{self.specs[HOME].listen}{path}"
        r = httpx.get(url, headers=headers or {}, timeout=5.0, trust_env=False)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r

    def metrics(self) -> dict[str, float]:
        """The edge exporter's fe_edge cache counters."""
        text = httpx.get(
            f"http://{self.specs[HOME].metrics_listen}/metrics?scope=frontend",
            timeout=3.0,
            trust_env=False,
        ).text
        out = {}
        for name in ("lookups", "hits"):
            found = re.search(
                rf'^haproxy_frontend_http_cache_{name}_total{{proxy="fe_edge"}} (\S+)$',
                text,
                re.M,
            )
            assert found, f"no {name} counter for fe_edge in /metrics"
            out[name] = float(found.group(1))
        return out

    def token(self, home: str) -> str:
        now = int(time.time())
        claims = {
            "iss": f"skylift-platform/{home}",
            "sub": "u1",
            "home_region": home,
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k1"})


def write_config(root: Path, edge_ports: dict[str, int], origins: dict[str, Origin]) -> Path:
    """The regions file of this world: its edges are rendered from it as `up --region` does."""
    data = {
        "project": "edgecache",
        "state_dir": str(root / "state"),
        "edge": {
            "service": "web",
            "mode": "geo",
            "default_region": HOME,
            "check": {"path": "/healthz", "inter": "300ms", "fall": 2, "rise": 1},
            "cache": {
                "paths": list(CACHE.paths),
                "max_age": CACHE.max_age,
                "bypass_cookies": list(CACHE.bypass_cookies),
            },
        },
        "services": {
            "web": {
                # each region's frontend is its origin; the replicas are never started
                "frontend": f"127.0.0.1:{origins[HOME].port}",
                "backend": {
                    "kind": "process",
                    "command": "/bin/true {port}",
                    "ports": {"start": 40000, "end": 40001},
                },
            }
        },
        "regions": {
            r: {
                "zone": "eu",
                "countries": [cc],
                "nearest": [other],
                "edge": {
                    "listen": f"127.0.0.1:{edge_ports[r]}",
                    "metrics": f"127.0.0.1:{free_port()}",
                },
                "database_url": "postgresql://skylift@127.0.0.1:1/unused",
                "services": {"web": {"frontend": f"127.0.0.1:{origins[r].port}"}},
            }
            for r, cc, other in ((HOME, "FR", OTHER), (OTHER, "DE", HOME))
        },
    }
    path = root / "regions.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheWorld]:
    root = tmp_path_factory.mktemp("edge-cache")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    regions = (HOME, OTHER)
    edge_ports = {r: free_port() for r in regions}
    origins = {r: Origin(r, free_port()) for r in regions}
    config = write_config(root, edge_ports, origins)
    loaded = load_config(config).config
    # exactly what each region's runtime renders (the token keys come from the JWKS there)
    specs = {r: edge_spec(loaded, r, root, token_keys={"k1": pem}) for r in regions}
    assert all(s.cache == CACHE and s.topology == TOPOLOGY for s in specs.values())
    edges = {r: Edge(specs[r]) for r in regions}
    started: list[Edge] = []
    try:
        for origin in origins.values():
            origin.start()
        for r in regions:
            asyncio.run(edges[r].start())
            started.append(edges[r])
        for r in regions:
            wait_for(
                lambda r=r: asyncio.run(edges[r].region_health()) == {HOME: True, OTHER: True},
                10.0,
                f"{r} edge sees both regions up",
            )
        yield CacheWorld(specs, edges, origins, key, config)
    finally:
        for edge in started:
            asyncio.run(edge.stop())
        for origin in origins.values():
            origin.kill()


def test_public_path_is_served_from_the_edge_the_second_time(world: CacheWorld) -> None:
    origin = world.origins[HOME]
    first = world.get("/static/app.js")
    assert first.headers[CACHE_HEADER] == "miss" and origin.hits("/static/app.js") == 1
    for _ in range(3):
        again = world.get("/static/app.js")
        assert again.headers[CACHE_HEADER] == "hit"
        assert again.json() == first.json()  # the stored answer, count 1
    assert origin.hits("/static/app.js") == 1  # the origin never saw them
    world.get("/favicon.ico")
    world.get("/favicon.ico")
    assert origin.hits("/favicon.ico") == 1


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/static/cookie?cookie=1", {}),  # public, max-age=60 AND Set-Cookie: 2.6 would store it
        ("/static/auth", {"Authorization": "Basic dXNlcjpwdw=="}),
        ("/static/session", {"Cookie": "theme=dark; sid=abc"}),  # a declared bypass cookie
        ("/static/private?cc=private,max-age=60", {}),
        ("/static/nostore?cc=no-store", {}),
        ("/static/vary?vary=User-Agent", {}),
        ("/static/bare?cc=none", {}),  # neither an expiry nor a validator
        ("/static/nocache?cc=no-cache", {}),
        ("/api/items", {}),  # cacheable answer, but not a declared-public path
        ("/static/%2e%2e/api/items", {}),  # a declared prefix, but an encoded dot segment
    ],
)
def test_never_cached_the_origin_counts_every_request(
    world: CacheWorld, path: str, headers: dict[str, str]
) -> None:
    origin = world.origins[HOME]
    for n in range(1, 4):
        r = world.get(path, headers)
        assert r.headers[CACHE_HEADER] != "hit"
        assert origin.hits(path) == n


def test_the_responses_max_age_bounds_its_stay(world: CacheWorld) -> None:
    """``max-age=1`` under the configured 60 s: kept, then fetched again once it expired."""
    path = "/static/short?cc=public,max-age=1"
    world.get(path)
    assert world.get(path).headers[CACHE_HEADER] == "hit"
    wait_for(lambda: world.get(path).headers[CACHE_HEADER] == "miss", 5.0, "the object to expire")
    assert world.origins[HOME].hits(path) == 2


def test_token_routed_request_is_never_cached(world: CacheWorld) -> None:
    """A user's request (Bearer token, routed by its claim) always reaches the origin."""
    bearer = {"Authorization": f"Bearer {world.token(HOME)}"}
    for n in range(1, 4):
        r = world.get("/static/token", bearer)
        assert r.headers["X-Skylift-Route"] == "token" and r.headers[CACHE_HEADER] == "bypass"
        assert world.origins[HOME].hits("/static/token") == n
    # and what an anonymous request cached is not handed to a user's request
    world.get("/static/app.js")
    assert world.get("/static/app.js", bearer).headers[CACHE_HEADER] == "bypass"


def test_another_regions_users_are_neither_served_nor_stored(world: CacheWorld) -> None:
    """The selector sends the request to eu-central: eu-west's cache is not theirs."""
    world.get("/static/shared.css")  # eu-west's copy, now in eu-west's cache
    assert world.get("/static/shared.css").headers[CACHE_HEADER] == "hit"
    sel = {"X-Skylift-Region": OTHER}
    for n in range(1, 4):
        r = world.get("/static/shared.css", sel)
        assert r.json()["region"] == OTHER and r.headers[CACHE_HEADER] == "bypass"
        assert world.origins[OTHER].hits("/static/shared.css") == n


def test_reload_on_up_purges_and_metrics_show_the_hit_ratio(world: CacheWorld) -> None:
    """`skylift up --region` adopts the running edge and reloads it: the cache starts empty."""
    origin = world.origins[HOME]
    world.get("/static/deploy.js")
    assert world.get("/static/deploy.js").headers[CACHE_HEADER] == "hit"
    # what RegionRuntime does on start: a new Edge on the same state dir adopts and reloads
    asyncio.run(Edge(world.specs[HOME]).start())
    assert world.metrics() == {"lookups": 0.0, "hits": 0.0}  # a new worker's counters
    r = world.get("/static/deploy.js")
    assert r.headers[CACHE_HEADER] == "miss" and r.json()["count"] == 2
    assert origin.hits("/static/deploy.js") == 2
    for _ in range(3):
        assert world.get("/static/deploy.js").headers[CACHE_HEADER] == "hit"
    world.get("/api/items")  # not a cache path: not a lookup, does not dilute the ratio
    assert world.metrics() == {"lookups": 4.0, "hits": 3.0}  # hit ratio 3/4


def test_cli_purge_empties_the_cache(world: CacheWorld) -> None:
    """`skylift region cache purge --region eu-west`: the next request reaches the origin."""
    world.get("/static/purged.css")
    assert world.get("/static/purged.css").headers[CACHE_HEADER] == "hit"
    result = CliRunner().invoke(
        app, ["region", "cache", "purge", "--region", HOME, "-c", str(world.config)]
    )
    assert result.exit_code == 0, result.output
    assert f"region {HOME}: purged" in result.output
    r = world.get("/static/purged.css")
    assert r.headers[CACHE_HEADER] == "miss" and world.origins[HOME].hits("/static/purged.css") == 2
    # the running config was reloaded unchanged: routing and tokens still work
    bearer = {"Authorization": f"Bearer {world.token(HOME)}"}
    assert world.get("/static/token", bearer).headers["X-Skylift-Route"] == "token"


def test_failover_answers_are_not_stored(world: CacheWorld) -> None:
    """eu-west's pool is down: eu-central answers (failover), eu-west keeps none of it."""
    world.get("/static/kept.js")  # cached from eu-west's own pool before the outage
    world.origins[HOME].kill()
    try:
        wait_for(
            lambda: asyncio.run(world.edges[HOME].region_health()).get(HOME) is False,
            5.0,
            "eu-west edge sees its pool down",
        )
        for n in range(1, 4):
            r = world.get("/static/failover.js")
            assert r.headers["X-Skylift-Route"] == "failover" and r.json()["region"] == OTHER
            assert r.headers[CACHE_HEADER] == "miss"
            assert world.origins[OTHER].hits("/static/failover.js") == n
        # eu-west's own public answer is still served from its edge during the outage
        assert world.get("/static/kept.js").headers[CACHE_HEADER] == "hit"
    finally:
        world.origins[HOME].start()
