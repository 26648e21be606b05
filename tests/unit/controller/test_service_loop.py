"""The reconcile loop of one service, on in-memory parts and a hand-driven clock."""

from __future__ import annotations

import asyncio

import pytest

from skylift.backends.memory import MemoryBackend
from skylift.config import Service
from skylift.controller.recorder import ControllerMetrics, Recorder
from skylift.controller.service import ServiceLoop
from skylift.model import Replica, ReplicaState
from tests.unit.controller.fakes import FakeBalancer, FakeStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_loop(
    desired: int = 3, healthy: bool = True, **spec: object
) -> tuple[ServiceLoop, MemoryBackend, FakeBalancer, FakeStore, Clock]:
    service = Service.model_validate(
        {
            "frontend": "127.0.0.1:9000",
            "backend": {"command": "app --port {port}"},
            "drain_timeout": "2s",
            "restart": {"initial": "1s", "max": "8s", "crash_loop_after": 3},
            **spec,
        }
    )
    backend, balancer, store, clock = MemoryBackend("web"), FakeBalancer(), FakeStore(), Clock()

    async def probe(replica: Replica) -> bool:
        return healthy

    loop = ServiceLoop(
        "web",
        service,
        backend,
        balancer,
        store,
        Recorder(store, ControllerMetrics()),
        desired=desired,
        clock=clock,
        probe=probe,
    )
    return loop, backend, balancer, store, clock


async def settle(loop: ServiceLoop, clock: Clock, ticks: int = 3) -> None:
    for _ in range(ticks):
        await loop.tick()
        await asyncio.gather(*loop._retiring)
        clock.now += 1


async def test_starts_desired_replicas_and_marks_them_ready() -> None:
    loop, backend, balancer, store, clock = make_loop()
    await settle(loop, clock)
    assert loop.count(ReplicaState.READY) == 3
    assert len(backend.running) == 3
    assert set(balancer.servers["web"]) == set(backend.running)
    assert store.kinds().count("replica_ready") == 3
    assert all(r.state == ReplicaState.READY for r in store.replicas("web"))


async def test_not_added_to_balancer_until_it_answers_health() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=1, healthy=False)
    await settle(loop, clock)
    assert len(backend.running) == 1
    assert balancer.servers.get("web", {}) == {}
    assert loop.count(ReplicaState.STARTING) == 1


async def test_dead_replica_is_removed_and_replaced() -> None:
    loop, backend, balancer, store, clock = make_loop()
    await settle(loop, clock)
    clock.now += 60
    victim = next(iter(backend.running))
    backend.crash(victim, code=-9)
    await settle(loop, clock)
    assert victim not in backend.running
    assert victim not in balancer.servers["web"]
    assert loop.count(ReplicaState.READY) == 3
    assert "replica_exited" in store.kinds()
    assert loop.crash.failures == 0  # it had been healthy for a while: not a crash loop


class NodeLosingBackend(MemoryBackend):
    """A memory backend whose replicas can go with their node (as multi-node swarm's)."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self.lost: set[str] = set()

    def lost_node(self, replica: Replica) -> bool:
        return replica.id in self.lost


async def test_a_replica_lost_with_its_node_is_replaced_without_a_crash() -> None:
    """Gone with its node moments after it became ready: not its fault, so no crash
    backoff and the event says why (a fresh replica dying alone is a crash)."""
    loop, _, balancer, store, clock = make_loop(desired=2)
    backend = NodeLosingBackend("web")
    loop.backend = backend
    await settle(loop, clock)
    victim = next(iter(backend.running))
    backend.lost.add(victim)
    backend.crash(victim, code=-9)
    await settle(loop, clock)
    assert loop.crash.failures == 0 and "replica_crashed" not in store.kinds()
    exited = [e for e in store.events_list if e["kind"] == "replica_exited"]
    assert len(exited) == 1 and "lost with its node" in exited[0]["message"]
    assert loop.count(ReplicaState.READY) == 2


async def test_failed_health_checks_rotate_the_replica_out() -> None:
    loop, backend, balancer, store, clock = make_loop()
    await settle(loop, clock)
    sick = next(iter(backend.running))
    balancer.servers["web"][sick].state = "down"
    await settle(loop, clock)
    assert ("remove", sick) in balancer.calls
    assert ("stop", sick) in backend.calls
    assert ("drain", sick) not in balancer.calls  # it gets no traffic anyway
    assert loop.count(ReplicaState.READY) == 3
    assert "replica_unhealthy" in store.kinds()


async def test_scale_in_drains_before_it_stops() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=3)
    await settle(loop, clock)
    loop.desired = 1
    await settle(loop, clock)
    assert loop.count(ReplicaState.READY) == 1
    assert len(backend.running) == 1
    stopped = [rid for verb, rid in backend.calls if verb == "stop"]
    assert len(stopped) == 2
    for rid in stopped:
        order = [c for c in balancer.calls if c[1] == rid]
        assert order[-2:] == [("drain", rid), ("remove", rid)]
        assert balancer.calls.index(("remove", rid)) >= 0


async def test_drain_waits_for_sessions_to_end() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await settle(loop, clock)
    busy = sorted(backend.running)[0]
    balancer.servers["web"][busy].sessions = 2
    loop.desired = 0
    await loop.tick()
    await asyncio.sleep(0.05)
    assert busy in backend.running  # still draining: sessions open
    balancer.servers["web"][busy].sessions = 0
    await asyncio.gather(*loop._retiring)
    assert busy not in backend.running


async def test_crash_loop_backs_off_and_starts_one_at_a_time() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=3)
    await loop.tick()  # starts 3
    for rid in list(backend.running):
        backend.crash(rid, code=1)
    await loop.tick()
    await asyncio.gather(*loop._retiring)
    assert loop.crash.failures == 3
    assert loop.state == "crash-loop"
    starts_before = len([c for c in backend.calls if c[0] == "start"])
    await loop.tick()  # inside the back-off window: no start
    assert len([c for c in backend.calls if c[0] == "start"]) == starts_before
    clock.now += 5  # back-off after 3 failures is min(8, 1 * 2**2) = 4 s
    await loop.tick()
    assert len([c for c in backend.calls if c[0] == "start"]) == starts_before + 1
    assert "replica_crashed" in store.kinds()


async def test_start_errors_back_off_too() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=1)
    backend.fail_next_starts = 2
    await loop.tick()
    assert loop.crash.failures == 1
    clock.now += 1.5
    await loop.tick()
    assert loop.crash.failures == 2
    clock.now += 2.5
    await settle(loop, clock)
    assert loop.count(ReplicaState.READY) == 1
    assert loop.crash.failures == 0


async def test_unreachable_balancer_kills_nothing_and_warns_once() -> None:
    loop, backend, balancer, store, clock = make_loop()
    await settle(loop, clock)
    balancer.unreachable = True
    await settle(loop, clock, ticks=4)
    assert len(backend.running) == 3
    assert store.kinds().count("balancer_unreachable") == 1
    balancer.unreachable = False
    await settle(loop, clock, ticks=1)
    assert "balancer_reachable" in store.kinds()


async def test_adopted_replicas_are_kept() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await settle(loop, clock)
    records = store.replicas("web")
    fresh, _, balancer2, store2, clock2 = make_loop(desired=2)
    backend.calls.clear()
    fresh.backend = backend
    fresh.balancer = balancer
    fresh.adopt(backend.adopt(records))
    await settle(fresh, clock2)
    assert not [c for c in backend.calls if c[0] in ("start", "stop")]
    assert fresh.count(ReplicaState.READY) == 2


@pytest.mark.parametrize("desired", [0, 1, 5])
async def test_converges_to_any_desired(desired: int) -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await settle(loop, clock)
    loop.desired = desired
    await settle(loop, clock, ticks=4)
    assert len(backend.running) == desired
    assert loop.count(ReplicaState.READY) == desired


async def test_a_death_is_handled_once_while_its_replica_is_being_stopped() -> None:
    loop, backend, _balancer, store, clock = make_loop()
    await settle(loop, clock)
    clock.now += 60
    victim = next(iter(backend.running))
    backend.crash(victim, code=137)
    for _ in range(3):  # ticks come faster than the stop (e.g. woken by Docker events)
        await loop.tick()
        clock.now += 0.1
    await asyncio.gather(*loop._retiring)
    exits = [e for e in store.events_list if e["kind"] in ("replica_exited", "replica_crashed")]
    assert [e["data"]["replica"] for e in exits] == [victim]
    assert loop.crash.failures == 0
