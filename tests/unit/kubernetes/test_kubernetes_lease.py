"""Leader election on a coordination.k8s.io Lease, against the in-process API emulator
(tests/k8s_emulator, no kubelet) with a fake monotonic clock."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.coordination_v1 import Lease

from skylift.backends.kubernetes_lease import KubernetesLease, Observed, judge
from tests.k8s_emulator.server import Emulator


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(emulator: Emulator) -> AsyncClient:
    return AsyncClient(
        KubeConfig.from_one(cluster=Cluster(server="http://emulator"), user=User()),
        namespace="default",
        transport=httpx2.ASGITransport(app=emulator.app()),
        timeout=httpx2.Timeout(5.0),
    )


def candidates(
    clock: Clock, duration: float = 6.0
) -> tuple[Emulator, KubernetesLease, KubernetesLease]:
    emulator = Emulator()
    a = KubernetesLease(client(emulator), "skylift-web", "default", "a", duration, clock=clock)
    b = KubernetesLease(client(emulator), "skylift-web", "default", "b", duration, clock=clock)
    return emulator, a, b


@pytest.mark.parametrize(
    ("holder", "seen_at", "verdict"),
    [("", 0.0, "take"), ("me", 0.0, "renew"), ("other", 95.0, "wait"), ("other", 90.0, "take")],
)
def test_judge(holder: str, seen_at: float, verdict: str) -> None:
    observed = Observed(holder, "t", 0, at=seen_at)
    assert judge(observed, "me", 10.0, now=100.0) == verdict
    assert judge(None, "me", 10.0, now=100.0) == "take"


async def test_one_holder_the_other_takes_over_when_it_stops_renewing() -> None:
    clock = Clock()
    emulator, a, b = candidates(clock)
    assert await a.step()  # creates the Lease
    assert a.trusted()
    assert not await b.step()
    assert b.holder == "a" and not b.trusted()
    for _ in range(2):  # a renews: b's observation of the record starts again each time
        clock.now += 4.0
        assert await a.step()
        assert not await b.step()
    clock.now += 3.5  # past a's local trust (duration / 2) without renewing
    assert not a.trusted()
    clock.now += 3.0  # b saw the same record for a whole duration: a stopped renewing
    assert await b.step()
    assert b.trusted()
    assert not await a.step()  # a finds b's record and waits
    assert a.holder == "b" and not a.trusted()
    lease = emulator.objects[("leases", "default", "skylift-web")]
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert emulator.invalid == []


async def test_simultaneous_takeover_has_one_winner_by_resource_version() -> None:
    clock = Clock()
    emulator, a, b = candidates(clock)
    c = KubernetesLease(client(emulator), "skylift-web", "default", "c", 6.0, clock=clock)
    assert await c.step()
    assert not await a.step() and not await b.step()
    clock.now += 7.0  # c is gone; a and b both see the same stale record
    won = await asyncio.gather(a.step(), b.step())
    assert sorted(won) == [False, True]  # the second PUT carried a stale resourceVersion: 409
    assert any(call.startswith("PUT ") for call in emulator.calls)


async def test_release_lets_the_other_take_over_at_once() -> None:
    clock = Clock()
    _, a, b = candidates(clock)
    assert await a.step()
    assert not await b.step()
    await a.release()
    assert not a.trusted()
    assert await b.step()
    got = await b.client.get(Lease, "skylift-web", namespace="default")
    assert got.spec is not None and got.spec.holderIdentity == "b"
