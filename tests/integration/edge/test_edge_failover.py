"""Outages injected by killing a region's stand-in service: failover, the 503, failback."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from edge_world import CHECK, REGIONS, World, client

from tests.polling import wait_for

BOUND = CHECK.fall * CHECK.inter + 1.0  # the documented failover bound (s)


@dataclass(frozen=True)
class Outcome:
    issued: float  # s after the outage began
    done: float
    status: int | None
    region: str | None
    route: str | None
    error: str | None = None
    documented_503: bool = False


def call(world: World, edge: str, token: str, t0: float) -> Outcome:
    issued = time.monotonic() - t0
    try:
        with client(timeout=5.0) as http:
            r = http.get(world.url(edge), headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return Outcome(issued, time.monotonic() - t0, None, None, None, repr(exc))
    done = time.monotonic() - t0
    if r.status_code == 503:
        body = r.json()
        ok = (
            body.get("error") == "region_unavailable"
            and "home_region" in body
            and "zone" in body
            and "reason" in body
            and r.headers.get("Retry-After") == "2"
            and r.headers.get("content-type") == "application/json"
        )
        return Outcome(issued, done, 503, None, r.headers.get("X-Skylift-Route"), None, ok)
    region = r.json().get("region") if r.status_code == 200 else None
    return Outcome(issued, done, r.status_code, region, r.headers.get("X-Skylift-Route"))


def calls_every_100ms(world: World, edge: str, token: str, seconds: float) -> list[Outcome]:
    """Issue one call every 100 ms (each on its own thread, never waiting on the previous)."""
    t0 = time.monotonic()
    futures: list[Future[Outcome]] = []
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(int(seconds * 10)):
            delay = t0 + i * 0.1 - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the open-loop client, not synchronisation
            futures.append(pool.submit(call, world, edge, token, t0))
        return [f.result() for f in futures]


def test_failover_in_zone_then_whole_zone_down_then_failback(world: World) -> None:
    token = world.token("eu-west")
    # 1. eu-west's pool dies: eu-central serves (route failover) within the bound,
    #    and in between only the documented 503 appears.
    world.standins["eu-west"].kill()
    t0 = time.monotonic()
    outcomes = calls_every_100ms(world, "us", token, seconds=BOUND + 1.5)
    failover = next(o for o in outcomes if o.region == "eu-central")
    assert failover.route == "failover"
    assert failover.done <= BOUND, outcomes
    for o in outcomes:
        assert o.error is None, o
        assert o.status in (200, 503), o
        if o.status == 503:
            assert o.documented_503, o
        else:
            assert o.region in ("eu-west", "eu-central"), o
    first = outcomes.index(failover)
    assert all(o.region == "eu-central" for o in outcomes[first + 1 :]), outcomes
    world.extra["failover_s"] = failover.done
    del t0

    # 2. the whole eu zone down: the documented 503 from every edge, never us or asia
    world.standins["eu-central"].kill()
    for edge in REGIONS:
        wait_for(
            lambda e=edge: not any(world.health(e)[r] for r in ("eu-west", "eu-central")),
            BOUND + 2,
            f"{edge} sees eu down",
            every=0.1,
        )
    with client() as http:
        for edge in REGIONS:
            for headers in (
                {"Authorization": f"Bearer {token}"},
                {"X-Skylift-Region": "eu-west"},
            ):
                r = http.get(world.url(edge), headers=headers)
                assert r.status_code == 503, (edge, r.text)
                body = r.json()
                assert body["error"] == "region_unavailable"
                assert (body["home_region"], body["zone"]) == ("eu-west", "eu")
                assert "not opted in" in body["reason"]
                assert r.headers["Retry-After"] == "2"
        # an opted-in user (xr=us) is served in us, tagged failover
        opted = world.token("eu-west", xr="us")
        for edge in REGIONS:
            r = http.get(world.url(edge), headers={"Authorization": f"Bearer {opted}"})
            assert r.status_code == 200, (edge, r.text)
            assert (r.json()["region"], r.headers["X-Skylift-Route"]) == ("us", "failover")
            assert r.json()["headers"]["x-skylift-route"] == "failover"
            assert r.json()["headers"]["x-skylift-home"] == "eu-west"

    # 3. recovery: routing fails back to eu-west (no standby promoted here)
    world.standins["eu-central"].start()
    world.standins["eu-west"].start()
    t1 = time.monotonic()
    back = calls_every_100ms(world, "us", token, seconds=4.0)
    home = next(o for o in back if o.region == "eu-west")
    assert home.route == "token"
    for o in back:
        assert o.error is None and o.status in (200, 503), o
        if o.status == 503:
            assert o.documented_503, o
    world.extra["failback_s"] = home.done
    del t1


def test_a_region_dying_mid_request_gets_the_documented_503_not_a_502(world: World) -> None:
    for edge in ("us", "asia"):  # forwarded to the asia edge, and served by asia's own edge
        if world.standins["asia"].proc is None:
            world.standins["asia"].start()
        wait_for(lambda e=edge: world.health(e)["asia"], BOUND + 3, "asia up", every=0.1)
        with client() as http:
            r = http.get(world.url(edge, "/die"), headers={"X-Skylift-Region": "asia"})
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "2"
        body = r.json()
        assert (body["error"], body["home_region"], body["zone"]) == (
            "region_unavailable",
            "asia",
            "asia",
        )
        world.standins["asia"].kill()  # it exited on /die: reap it
