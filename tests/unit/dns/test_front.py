"""The front's loop with a fake PowerDNS and fake edges: rewrite and reload only on a change."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from skylift.config import load_config
from skylift.dns.front import GeoDnsFront
from skylift.dns.pdns import PowerDNSError
from skylift.dns.plan import DnsPlan, dns_plan
from tests.geodns_config import ZONE, default_ports, write_config


class FakePowerDNS:
    def __init__(self) -> None:
        self.reloads = 0
        self.fail_next = 0
        self.exited = False
        self.pid = 4242

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def reload(self) -> float:
        if self.fail_next:
            self.fail_next -= 1
            raise PowerDNSError("pdns_control reload timed out")
        self.reloads += 1
        return 0.01

    def check_alive(self) -> None:
        if self.exited:
            raise PowerDNSError("pdns_server exited with 1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


@pytest.fixture
def plan(tmp_path: Path) -> DnsPlan:
    loaded = load_config(write_config(tmp_path, **default_ports(), geoip_map=None))
    return dns_plan(loaded.config, loaded.base_dir)


def edges(down: set[str], plan: DnsPlan) -> httpx.AsyncClient:
    ports = {int(target.rpartition(":")[2]): r for r, target in plan.probes.items()}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/_skylift/region-health"
        region = ports[request.url.port or 80]
        if region in down:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def de_target(plan: DnsPlan) -> str:
    zone = yaml.safe_load(plan.zones_file.read_text())
    return str(zone["domains"][0]["records"][f"de.cc.{ZONE}"][0]["cname"])


async def test_an_outage_is_rewritten_and_reloaded_once(plan: DnsPlan) -> None:
    server = FakePowerDNS()
    front = GeoDnsFront(plan, server, clock=Clock())  # type: ignore[arg-type]
    await front.start()
    assert de_target(plan) == f"eu-west.edge.{ZONE}"
    async with edges({"eu-west"}, plan) as client:
        assert await front.round(client) is None  # one failed check moves nothing
        change = await front.round(client)
        assert change is not None
        assert await front.round(client) is None
    assert server.reloads == 1
    assert de_target(plan) == f"eu-central.edge.{ZONE}"
    assert change["moved"] == {"DE": "eu-central", "FR": "eu-central", "GB": "eu-central"}
    assert 0 < change["since_first_check_s"] < 1  # from the first failed round (fake clock)
    state = json.loads(plan.state_file.read_text())
    assert state["health"]["eu-west"] is False
    assert state["answers"]["DE"]["why"] == "failover"


async def test_a_failed_reload_is_retried_next_round(plan: DnsPlan) -> None:
    server = FakePowerDNS()
    front = GeoDnsFront(plan, server, clock=Clock())  # type: ignore[arg-type]
    await front.start()
    server.fail_next = 1
    async with edges({"eu-west"}, plan) as client:
        await front.round(client)
        assert await front.round(client) is None  # the reload failed
        assert front.answers.region_for("DE") == "eu-west"  # not served yet
        change = await front.round(client)  # no new flip, still retried
    assert change is not None and change["since_first_check_s"] is None
    assert server.reloads == 1
    assert front.answers.region_for("DE") == "eu-central"


async def test_a_whole_zone_down_changes_reasons_but_no_answer(plan: DnsPlan) -> None:
    server = FakePowerDNS()
    front = GeoDnsFront(plan, server, clock=Clock())  # type: ignore[arg-type]
    await front.start()
    async with edges({"eu-west", "eu-central"}, plan) as client:
        await front.round(client)
        assert await front.round(client) is None
    assert server.reloads == 0  # every eu country still points at its home edge
    assert front.answers.as_dict()["DE"]["why"] == "zone_down"


async def test_a_dead_powerdns_ends_the_loop(plan: DnsPlan) -> None:
    server = FakePowerDNS()
    front = GeoDnsFront(plan, server, clock=Clock())  # type: ignore[arg-type]
    await front.start()
    server.exited = True
    async with edges(set(), plan) as client:
        with pytest.raises(PowerDNSError, match="exited"):
            await front.round(client)


async def test_a_new_edge_map_rebuilds_the_database_and_reloads(tmp_path: Path) -> None:
    (tmp_path / "geoip.map").write_text("198.51.100.0/24 DE\n")
    loaded = load_config(write_config(tmp_path, **default_ports()))
    plan = dns_plan(loaded.config, loaded.base_dir)
    server = FakePowerDNS()
    front = GeoDnsFront(plan, server, clock=Clock())  # type: ignore[arg-type]
    await front.start()
    assert await front.refresh_database() is False
    (tmp_path / "geoip.map").write_text("198.51.100.0/24 DE\n192.0.2.0/24 US\n")
    assert await front.refresh_database() is True
    assert server.reloads == 1
    assert await front.refresh_database() is False
