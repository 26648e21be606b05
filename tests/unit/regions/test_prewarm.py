"""Failover prewarm: who takes over whose users, how many replicas, and the I/O loop."""

from __future__ import annotations

import asyncio
import math

from hypothesis import given
from hypothesis import strategies as st

from skylift.regions.prewarm import Prewarmer, prewarm_extra, takeover
from skylift.regions.rules import RegionFacts, Topology, failover_chain

TOPOLOGY = Topology(
    (
        RegionFacts("us", "us", nearest=("eu-west", "eu-central", "asia")),
        RegionFacts("eu-west", "eu", nearest=("eu-central", "us", "asia")),
        RegionFacts("eu-central", "eu", nearest=("eu-west", "asia", "us"), standby_of="eu-west"),
        RegionFacts("asia", "asia", nearest=("eu-central", "eu-west", "us")),
    ),
    default="us",
)
REPLICAS = {"us": 2, "eu-west": 3, "eu-central": 2, "asia": 2}


def test_nothing_down_nothing_added() -> None:
    assert prewarm_extra(TOPOLOGY, [], REPLICAS, 1.0) == {
        "us": 0,
        "eu-west": 0,
        "eu-central": 0,
        "asia": 0,
    }


def test_in_zone_neighbour_takes_the_failed_regions_replicas() -> None:
    extra = prewarm_extra(TOPOLOGY, ["eu-west"], REPLICAS, 1.0)
    assert extra == {"us": 0, "eu-central": 3, "asia": 0}


def test_fraction_rounds_up_and_zero_disables() -> None:
    assert prewarm_extra(TOPOLOGY, ["eu-west"], REPLICAS, 0.5)["eu-central"] == 2  # 1.5 -> 2
    assert prewarm_extra(TOPOLOGY, ["eu-west"], REPLICAS, 1 / 3)["eu-central"] == 1  # exact 1
    assert prewarm_extra(TOPOLOGY, ["eu-west"], REPLICAS, 0)["eu-central"] == 0


def test_a_region_alone_in_its_zone_is_covered_by_nobody() -> None:
    # us users never fail over across zones (opt-in users are left to autoscaling)
    assert prewarm_extra(TOPOLOGY, ["us"], REPLICAS, 1.0) == {
        "eu-west": 0,
        "eu-central": 0,
        "asia": 0,
    }
    assert takeover(TOPOLOGY, "us", ["us"]) is None


def test_whole_zone_down_adds_nothing_anywhere() -> None:
    extra = prewarm_extra(TOPOLOGY, ["eu-west", "eu-central"], REPLICAS, 2.0)
    assert extra == {"us": 0, "asia": 0}


@given(
    down=st.sets(st.sampled_from(TOPOLOGY.names)),
    replicas=st.fixed_dictionaries({n: st.integers(0, 20) for n in TOPOLOGY.names}),
    prewarm=st.floats(0, 4),
)
def test_extra_goes_only_to_healthy_regions_of_the_failed_zone(
    down: set[str], replicas: dict[str, int], prewarm: float
) -> None:
    extra = prewarm_extra(TOPOLOGY, down, replicas, prewarm)
    assert set(extra) == set(TOPOLOGY.names) - down  # every survivor, no failed region
    expected: dict[str, int] = dict.fromkeys(extra, 0)
    for failed in down:
        chain = [r for r in failover_chain(TOPOLOGY, failed) if r not in down]
        if chain and prewarm > 0:
            assert TOPOLOGY.zone_of(chain[0]) == TOPOLOGY.zone_of(failed)  # residency kept
            expected[chain[0]] += math.ceil(prewarm * replicas[failed] - 1e-9)
    assert extra == expected


class FakeHealth:
    def __init__(self) -> None:
        self.view = {n: True for n in TOPOLOGY.names}
        self.fail = False

    async def region_health(self) -> dict[str, bool]:
        if self.fail:
            raise OSError("edge runtime socket gone")
        return dict(self.view)


class FakeScaler:
    def __init__(self, desired: int, maximum: int = 100) -> None:
        self.value = desired
        self.maximum = maximum
        self.calls: list[tuple[int, str]] = []

    def desired(self, service: str) -> int:
        return self.value

    def set_desired(self, service: str, replicas: int, reason: str) -> int:
        self.value = min(replicas, self.maximum)
        self.calls.append((self.value, reason))
        return self.value


def _prewarmer(health: FakeHealth, scaler: FakeScaler, grace: float = 0.0) -> Prewarmer:
    return Prewarmer("eu-central", "platform", TOPOLOGY, REPLICAS, 1.0, health, scaler, grace=grace)


def test_prewarmer_raises_while_covering_and_lowers_after_recovery() -> None:
    health, scaler = FakeHealth(), FakeScaler(2)
    warm = _prewarmer(health, scaler)

    async def scenario() -> None:
        assert await warm.step() == 0 and scaler.calls == []
        health.view["eu-west"] = False
        assert await warm.step() == 3
        assert scaler.value == 5 and "covering eu-west" in scaler.calls[-1][1]
        assert await warm.step() == 3 and len(scaler.calls) == 1  # level-triggered: no repeat
        scaler.value = 7  # the autoscaler added two meanwhile: they stay
        health.view["eu-west"] = True
        assert await warm.step() == 0
        assert scaler.value == 4

    asyncio.run(scenario())


def test_prewarmer_takes_back_only_what_the_clamp_let_through() -> None:
    health, scaler = FakeHealth(), FakeScaler(2, maximum=4)
    warm = _prewarmer(health, scaler)

    async def scenario() -> None:
        health.view["eu-west"] = False
        assert await warm.step() == 2  # 2 + 3 capped at 4
        health.view["eu-west"] = True
        await warm.step()
        assert scaler.value == 2

    asyncio.run(scenario())


def test_prewarmer_leaves_everything_when_the_edge_does_not_answer() -> None:
    health, scaler = FakeHealth(), FakeScaler(2)
    warm = _prewarmer(health, scaler)

    async def scenario() -> None:
        health.view["eu-west"] = False
        await warm.step()
        health.fail = True
        assert await warm.step() == 3 and scaler.value == 5

    asyncio.run(scenario())


def test_own_region_reported_down_is_not_covered_by_itself() -> None:
    health, scaler = FakeHealth(), FakeScaler(2)
    warm = _prewarmer(health, scaler)
    health.view["eu-central"] = False  # the edge sees its own pool down: nothing to prewarm

    asyncio.run(warm.step())
    assert scaler.calls == []


def test_peers_starting_with_this_region_are_not_prewarmed_for() -> None:
    health, scaler = FakeHealth(), FakeScaler(2)
    now = [0.0]
    warm = Prewarmer(
        "eu-central", "platform", TOPOLOGY, REPLICAS, 1.0, health, scaler,
        grace=30.0, clock=lambda: now[0],
    )  # fmt: skip
    health.view["eu-west"] = False  # not up yet: its first checks are still running

    async def scenario() -> None:
        await warm.step()
        now[0] = 10.0
        await warm.step()
        assert scaler.calls == []  # within the grace, never seen up: not "down"
        now[0] = 31.0
        assert await warm.step() == 3  # still not up after the grace: covered
        health.view["eu-west"] = True
        await warm.step()
        health.view["eu-west"] = False  # seen up once: down counts at once
        now[0] = 32.0
        assert await warm.step() == 3

    asyncio.run(scenario())
