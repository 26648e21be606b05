"""Changing a running edge: maps live without a reload, new keys and geoip with a hitless one."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from edge_world import World, client, spki, with_spec

from skylift.edge.geoip import build_map, parse_extra
from skylift.edge.latency import LatencyProber
from skylift.edge.runner import Edge
from skylift.lb.process import pid_alive
from tests.polling import wait_for


def reloads(world: World, region: str) -> int:
    return int(world.run(world.edges[region].process.show_proc()).reloads)


def test_region_health_reports_every_region(world: World) -> None:
    assert world.health("us") == {"us": True, "eu-west": True, "eu-central": True, "asia": True}


def test_extra_country_changes_live_without_reload(world: World) -> None:
    before = reloads(world, "us")
    with client("127.0.0.6") as http:
        assert http.get(world.url("us")).headers["X-Skylift-Route"] == "default"  # BR: no region
        spec = with_spec(
            world,
            "us",
            extra_countries={**world.specs["us"].extra_countries, "127.0.0.6/32": "JP"},
        )
        world.run(world.edges["us"].apply(spec))
        r = http.get(world.url("us"))
    assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("asia", "geo")
    assert reloads(world, "us") == before


def test_new_key_and_geoip_map_reload_without_losing_a_request(
    world: World, tmp_path: Path
) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_token = world.token("asia", key=new_key, kid="k2")
    old_token = world.token("eu-central")
    with client() as http:
        r = http.get(world.url("us"), headers={"Authorization": f"Bearer {new_token}"})
        assert r.status_code == 401  # k2 not published yet

    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with client() as http:
            while not stop.is_set():
                try:
                    r = http.get(world.url("us"), headers={"Authorization": f"Bearer {old_token}"})
                    if r.status_code != 200 or r.json()["region"] != "eu-central":
                        failures.append(f"{r.status_code} {r.text[:80]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    geo = tmp_path / "geo.map"
    csv = tmp_path / "geo.csv"
    csv.write_text("127.0.0.8,127.0.0.8,DE\n")
    build_map(csv, geo, parse_extra([]))
    before = reloads(world, "us")
    thread = threading.Thread(target=load)
    thread.start()
    try:
        keys = {**world.specs["us"].token_keys, "k2": spki(new_key)}
        world.run(world.edges["us"].apply(with_spec(world, "us", token_keys=keys, geoip_map=geo)))
    finally:
        stop.set()
        thread.join(10)
    assert reloads(world, "us") == before + 1
    assert failures == []
    with client() as http:
        r = http.get(world.url("us"), headers={"Authorization": f"Bearer {new_token}"})
        assert (r.status_code, r.json()["region"]) == (200, "asia")
    with client("127.0.0.8") as http:
        r = http.get(world.url("us"))
        assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("eu-central", "geo")
    # the region health survived the reload (state file), nothing flapped
    assert all(world.health("us").values())


def test_latency_prober_sets_the_map(world: World) -> None:
    edge = world.edges["eu-west"]
    prober = LatencyProber(edge, world.specs["eu-west"], samples=2, answer_within=2.0)

    async def once() -> str | None:
        async with httpx.AsyncClient() as http:
            return await prober.probe_once(http)

    best = world.run(once())
    assert best in world.specs["eu-west"].topology.names
    assert set(prober.last) == {"us", "eu-west", "eu-central", "asia"}
    assert all(v is not None for v in prober.last.values())
    with client("127.0.0.6") as http:  # no country known at this edge
        r = http.get(world.url("eu-west"))
    assert (r.json()["region"], r.headers["X-Skylift-Route"]) == (best, "latency")


def test_a_new_edge_object_adopts_the_running_haproxy(world: World) -> None:
    old = world.edges["asia"]
    pid = old.process.read_pid()
    adopted = Edge(world.specs["asia"])
    world.run(adopted.start())
    assert adopted.process.read_pid() == pid
    world.edges["asia"] = adopted
    with client() as http:
        token = jwt.encode(
            {"iss": "skylift-platform/us", "home_region": "us", "exp": 2**31 - 1},
            world.key,
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        r = http.get(world.url("asia"), headers={"Authorization": f"Bearer {token}"})
    assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("us", "token")


def test_apply_revives_a_killed_edge(world: World) -> None:
    import os
    import signal

    edge = world.edges["eu-central"]
    pid = edge.process.read_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the master; its worker exits with it
    wait_for(lambda: not pid_alive(pid), 5, "edge master gone")
    world.run(edge.apply(world.specs["eu-central"]))
    assert edge.process.read_pid() not in (None, pid)
    with client() as http:
        r = http.get(world.url("eu-central"), headers={"X-Skylift-Region": "eu-central"})
    assert (r.status_code, r.json()["region"]) == (200, "eu-central")
