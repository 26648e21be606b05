"""Four regions on loopback, each a real edge HAProxy and a stand-in service frontend.

us (zone us), eu-west and eu-central (zone eu; eu-central holds eu-west's
standby), asia. Edges start once per module; an outage is the stand-in killed.
Every process started here is stopped in the fixture's finally.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from skylift.edge.runner import Edge
from skylift.edge.spec import EdgeSpec, RegionCheck
from skylift.regions.rules import RegionFacts, Topology
from tests.fixtures.region_process import RegionProcess
from tests.polling import wait_for
from tests.ports import free_port

STANDIN = Path(__file__).with_name("standin.py")
REGIONS = ("us", "eu-west", "eu-central", "asia")
#: client source address -> country (extra CIDRs of every edge); 127.0.0.1 is the peers'
GEO_CLIENTS = {"127.0.0.2": "DE", "127.0.0.3": "JP", "127.0.0.4": "FR", "127.0.0.6": "BR"}
STRANGER = "127.0.0.5"  # a client that is not a peer edge and has no country

TOPOLOGY = Topology(
    regions=(
        RegionFacts("us", "us", frozenset({"US", "CA"}), ("eu-west", "eu-central", "asia")),
        RegionFacts("eu-west", "eu", frozenset({"FR", "GB"}), ("eu-central", "us", "asia")),
        RegionFacts(
            "eu-central",
            "eu",
            frozenset({"DE", "PL"}),
            ("eu-west", "us", "asia"),
            standby_of="eu-west",
        ),
        RegionFacts("asia", "asia", frozenset({"JP"}), ("us", "eu-central", "eu-west")),
    ),
    default="us",
    mode="latency",
)
# Fast enough for the failover tests, yet a peer is marked down only after three
# checks fail 1 s each: a 2-core CI host stalling the edge for a second (a reload
# under load) once marked both eu regions down and answered a 503.
CHECK = RegionCheck(inter=0.5, fall=3, rise=2, timeout=1.0)


def spki(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Standin(RegionProcess):
    script = STANDIN


@dataclass
class World:
    edges: dict[str, Edge]
    specs: dict[str, EdgeSpec]
    standins: dict[str, Standin]
    key: ec.EllipticCurvePrivateKey
    kid: str = "k1"
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, region: str, path: str = "/me") -> str:
        return f"http://{self.specs[region].listen}{path}"

    def token(
        self,
        home: str,
        *,
        xr: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str | None = None,
        exp_in: int = 300,
        iss_region: str | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": f"skylift-platform/{iss_region or home}",
            "sub": "u1",
            "home_region": home,
            "iat": now,
            "exp": now + exp_in,
            "jti": "j",
        }
        if xr is not None:
            claims["xr"] = xr
        return jwt.encode(
            claims, key or self.key, algorithm="ES256", headers={"kid": kid or self.kid}
        )

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def health(self, region: str) -> dict[str, bool]:
        return dict(self.run(self.edges[region].region_health()))

    def wait_healthy(self, timeout: float = 10.0) -> None:
        for region in REGIONS:
            wait_for(
                lambda r=region: all(self.health(r).values()) and len(self.health(r)) == 4,
                timeout,
                f"{region} edge sees every region up",
                every=0.1,
            )


def client(source: str | None = None, timeout: float = 5.0) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source) if source else httpx.HTTPTransport()
    return httpx.Client(transport=transport, timeout=timeout)


def start_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("edges")
    key = ec.generate_private_key(ec.SECP256R1())
    edge_ports = {r: free_port() for r in REGIONS}
    standins = {r: Standin(r, free_port()) for r in REGIONS}
    specs = {
        r: EdgeSpec(
            region=r,
            topology=TOPOLOGY,
            listen=f"127.0.0.1:{edge_ports[r]}",
            local=f"127.0.0.1:{standins[r].port}",
            peers={p: f"127.0.0.1:{edge_ports[p]}" for p in REGIONS if p != r},
            trusted_peers=frozenset({"127.0.0.1"}),
            state_dir=root / r,
            token_keys={"k1": spki(key)},
            check=CHECK,
            extra_countries={f"{ip}/32": cc for ip, cc in GEO_CLIENTS.items()},
            retry_after=2,
        )
        for r in REGIONS
    }
    edges = {r: Edge(specs[r]) for r in REGIONS}
    started: list[Edge] = []
    try:
        for standin in standins.values():
            standin.start()
        for r in REGIONS:
            asyncio.run(edges[r].start())
            started.append(edges[r])
        world = World(edges, specs, standins, key)
        world.wait_healthy()
        yield world
    finally:
        for edge in started:
            asyncio.run(edge.stop())
        for standin in standins.values():
            standin.kill()


def with_spec(world: World, region: str, **changes: Any) -> EdgeSpec:
    spec = replace(world.specs[region], **changes)
    world.specs[region] = spec
    return spec
