"""Level-triggered reconcile: the replica state machine, retries, drift and strays.

In-memory backend and balancer, hand-driven clock: each test injects a fault
(a step that raises, a server changed behind skylift's back) and ticks.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from skylift.config import Service
from skylift.config.service import HealthCheck
from skylift.controller.service import NotHoldable, ServiceLoop, UnknownReplica
from skylift.model import Replica, ReplicaState
from tests.unit.controller.fakes import FakeServer
from tests.unit.controller.test_service_loop import Clock, make_loop


async def tick(loop: ServiceLoop, clock: Clock, ticks: int = 1) -> None:
    """Tick, let the retire steps started by the tick finish, move the clock."""
    for _ in range(ticks):
        await loop.tick()
        await asyncio.gather(*loop._retiring, *loop._strays.values())
        clock.now += 1


def failed_steps(store: object) -> list[str]:
    events = store.events_list  # type: ignore[attr-defined]
    return [e["data"]["step"] for e in events if e["kind"] == "replica_retire_failed"]


@pytest.mark.parametrize(
    ("verb", "step"), [("drain", "drain"), ("remove", "remove"), ("stop", "stop")]
)
async def test_a_failing_retire_step_is_retried_next_tick_until_the_replica_is_gone(
    verb: str, step: str
) -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    if verb == "stop":
        backend.fail_next_stops = 2
    else:
        balancer.failing[verb] = 2
    loop.desired = 1
    await tick(loop, clock)  # decides the scale-in; its first attempt fails
    assert len(backend.running) == 2
    victim = next(t for t in loop.tracked.values() if t.retiring)
    assert store.replicas_by_id[victim.replica.id].state is not ReplicaState.READY
    await tick(loop, clock)  # second attempt fails too
    await tick(loop, clock, 2)  # third succeeds
    assert failed_steps(store) == [step, step]
    assert len(backend.running) == 1
    assert victim.replica.id not in backend.running
    assert victim.replica.id not in balancer.servers["web"]
    assert victim.replica.id not in store.replicas_by_id
    assert victim.replica.id not in loop.tracked
    stopped = [e for e in store.events_list if e["kind"] == "replica_stopped"]
    assert stopped[-1]["data"]["failed_attempts"] == 2


async def test_an_unhealthy_replica_whose_removal_fails_is_still_replaced_and_stopped() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    sick = sorted(backend.running)[0]
    balancer.servers["web"][sick].state = "down"
    balancer.failing["remove"] = 3
    await tick(loop, clock, 6)
    assert failed_steps(store) == ["remove"] * 2  # the third, same failure is not re-said
    assert [c for c in balancer.calls if c == ("remove", sick)] == [("remove", sick)] * 4
    assert sick not in backend.running
    assert loop.count(ReplicaState.READY) == 2


async def test_drain_keeps_waiting_while_haproxy_stats_fail() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)  # drain_timeout 2s
    await tick(loop, clock, 3)
    busy = sorted(backend.running)[0]
    balancer.servers["web"][busy].sessions = 3
    loop.desired = 1
    loop._pick_surplus = lambda active, count: [loop.tracked[busy]]  # type: ignore[method-assign]
    await loop.tick()
    await asyncio.sleep(0.05)
    balancer.unreachable = True  # the stats read fails mid-drain
    await asyncio.sleep(0.5)
    assert busy in backend.running  # it did not take the error for "drained"
    clock.now += 3  # past drain_timeout
    await asyncio.gather(*loop._retiring)
    assert busy not in backend.running
    assert "drain_timeout" in store.kinds()


async def test_no_replica_is_skipped_forever_under_a_long_outage() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=3)
    await tick(loop, clock, 3)
    balancer.failing["drain"] = 20
    loop.desired = 0
    await tick(loop, clock, 25)
    assert backend.running == {}
    assert loop.tracked == {}
    assert store.replicas_by_id == {}


async def test_a_stray_haproxy_server_is_drained_and_deleted() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    balancer.servers["web"]["intruder"] = FakeServer("up")
    await tick(loop, clock)
    assert "intruder" not in balancer.servers["web"]
    order = [c for c in balancer.calls if c[1] == "intruder"]
    assert order == [("drain", "intruder"), ("remove", "intruder")]
    assert "haproxy_stray_removed" in store.kinds()
    assert len(backend.running) == 2  # nothing of ours touched


async def test_a_ready_replica_put_in_maint_behind_skylifts_back_is_restored() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    victim = sorted(backend.running)[0]
    balancer.servers["web"][victim].state = "maint"
    await tick(loop, clock)
    assert balancer.servers["web"][victim].state == "up"
    restored = [e for e in store.events_list if e["kind"] == "replica_restored"]
    assert [e["data"]["replica"] for e in restored] == [victim]
    assert restored[0]["data"]["haproxy_state"] == "maint"
    assert ("stop", victim) not in backend.calls


async def test_a_stray_backend_replica_is_stopped() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=1)
    await tick(loop, clock, 3)
    backend.running["web-orphan"] = Replica("web-orphan", "web", "127.0.0.1", 29999, pid=7)
    clock.now += 20  # the backend listing runs every few seconds
    await tick(loop, clock)
    assert "web-orphan" not in backend.running
    assert "replica_stray_stopped" in store.kinds()
    assert len(backend.running) == 1


async def test_held_replica_stays_out_of_rotation_and_is_replaced_until_released() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    held = sorted(backend.running)[0]
    await loop.hold(held)
    assert balancer.servers["web"][held].state == "maint"
    assert store.replicas_by_id[held].state is ReplicaState.HELD
    await tick(loop, clock, 3)
    assert held in backend.running  # kept running for the operator
    assert balancer.servers["web"][held].state == "maint"  # not "restored": it is intent
    assert loop.count(ReplicaState.READY) == 2  # a replacement keeps capacity
    assert "replica_restored" not in store.kinds()
    balancer.servers["web"][held].state = "up"  # someone undid the hold on the socket
    await tick(loop, clock)
    assert balancer.servers["web"][held].state == "maint"
    await loop.release(held)
    await tick(loop, clock, 3)
    assert loop.count(ReplicaState.READY) == 2  # the surplus was drained again
    assert held in backend.running  # ... and the surplus is the younger replacement
    assert len(backend.running) == 2
    assert {"replica_held", "replica_released"} <= set(store.kinds())


async def test_hold_survives_a_controller_restart() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=1)
    await tick(loop, clock, 3)
    held = sorted(backend.running)[0]
    await loop.hold(held)
    await tick(loop, clock, 3)
    fresh, _, _, _, clock2 = make_loop(desired=1)
    fresh.backend, fresh.balancer, fresh.store = backend, balancer, store
    fresh.adopt(backend.adopt(store.replicas("web")))
    await tick(fresh, clock2, 3)
    assert fresh.tracked[held].replica.state is ReplicaState.HELD
    assert balancer.servers["web"][held].state == "maint"
    assert fresh.count(ReplicaState.READY) == 1


async def test_hold_refuses_unknown_or_retiring_replicas() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=1)
    await tick(loop, clock, 3)
    with pytest.raises(UnknownReplica):
        await loop.hold("web-nope")
    rid = sorted(backend.running)[0]
    balancer.failing["drain"] = 5
    loop.desired = 0
    await tick(loop, clock)
    with pytest.raises(NotHoldable):
        await loop.hold(rid)


async def test_a_replica_recorded_mid_scale_in_is_finished_after_a_restart() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    balancer.failing["remove"] = 1
    loop.desired = 1
    await loop.tick()  # the drain starts, then the controller "dies"
    await asyncio.gather(*loop._retiring)
    draining = [r for r in store.replicas("web") if r.state.retiring]
    assert len(draining) == 1
    fresh, _, _, _, clock2 = make_loop(desired=1)
    fresh.backend, fresh.balancer, fresh.store = backend, balancer, store
    fresh.adopt(backend.adopt(store.replicas("web")))
    before = len(backend.calls)
    await tick(fresh, clock2, 3)
    assert len(backend.running) == 1
    assert draining[0].id not in backend.running
    assert draining[0].id not in balancer.servers["web"]
    assert fresh.count(ReplicaState.READY) == 1
    assert not [c for c in backend.calls[before:] if c[0] == "start"]  # nothing to replace


async def test_shutdown_retries_failed_steps() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    balancer.failing["remove"] = 2
    backend.fail_next_stops = 1
    await loop.stop_all()
    assert backend.running == {}
    assert store.replicas_by_id == {}


# -- health: skylift's probe and HAProxy's check agree ------------------------------


@pytest.mark.parametrize(
    ("expect", "healthy", "unhealthy"),
    [
        ("2xx", [200, 204, 299], [199, 301, 404, 500]),
        ("200", [200], [204, 301]),
        ("2xx,301", [204, 301], [302]),
        ("200-399", [200, 302, 399], [400]),
        (["200", 204], [200, 204], [201]),
    ],
)
def test_expected_statuses(expect: object, healthy: list[int], unhealthy: list[int]) -> None:
    check = HealthCheck.model_validate({"expect_status": expect})
    assert all(check.accepts(code) for code in healthy)
    assert not any(check.accepts(code) for code in unhealthy)


@pytest.mark.parametrize("bad", ["2x0", "600", "abc", "399-200", "2", "", "2xxx"])
def test_invalid_expected_statuses_are_refused_clearly(bad: str) -> None:
    with pytest.raises(ValidationError, match="expect_status"):
        HealthCheck.model_validate({"expect_status": bad})


def test_haproxy_check_expects_the_statuses_the_probe_accepts() -> None:
    from skylift.lb.balancer import check_spec
    from skylift.lb.render import expect_codes

    service = Service.model_validate(
        {
            "frontend": "127.0.0.1:9000",
            "backend": {"command": "app --port {port}"},
            "health": {"expect_status": "2xx,301"},
        }
    )
    assert expect_codes(check_spec(service).expect) == "200-299,301"
    assert expect_codes(check_spec(Service.model_validate({**service.model_dump(),
        "health": {}})).expect) == "200-299"  # fmt: skip


async def test_the_probe_accepts_204_and_refuses_301() -> None:
    import httpx

    from skylift.backends.memory import MemoryBackend
    from skylift.controller.recorder import ControllerMetrics, Recorder
    from tests.unit.controller.fakes import FakeBalancer, FakeStore

    codes = {"/a": 204, "/b": 301}
    seen: list[bool] = []
    for path, code in codes.items():
        service = Service.model_validate(
            {
                "frontend": "127.0.0.1:9000",
                "backend": {"command": "app --port {port}"},
                "health": {"path": path},
            }
        )
        store = FakeStore()
        loop = ServiceLoop(
            "web", service, MemoryBackend("web"), FakeBalancer(), store,
            Recorder(store, ControllerMetrics()), desired=0,
        )  # fmt: skip
        loop._http = httpx.AsyncClient(
            transport=httpx.MockTransport(lambda request, code=code: httpx.Response(code))
        )
        seen.append(await loop._answers_health(Replica("r", "web", "127.0.0.1", 1)))
        await loop.close()
    assert seen == [True, False]


async def test_a_repeated_failure_is_recorded_sparsely_but_retried_every_tick() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=1)
    await tick(loop, clock, 3)
    balancer.failing["drain"] = 9
    loop.desired = 0
    await tick(loop, clock, 12)
    assert backend.running == {}
    drains = [c for c in balancer.calls if c[0] == "drain"]
    assert len(drains) == 10  # tried on every tick
    attempts = [
        e["data"]["attempt"] for e in store.events_list if e["kind"] == "replica_retire_failed"
    ]
    assert attempts == [1, 2, 4, 8]


async def test_a_dead_balancer_is_revived_and_its_members_restored() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    balancer.unreachable = balancer.dead = True
    await tick(loop, clock)
    assert ("revive", "*") in balancer.calls
    assert "balancer_revived" in store.kinds()
    assert set(balancer.servers["web"]) == set(backend.running)
    assert ("stop",) not in {c[:1] for c in backend.calls}  # nobody was replaced


async def test_a_replica_stopped_while_the_tick_runs_is_not_taken_for_a_stray() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    loop.desired = 1
    statuses = await balancer.status("web")  # the tick's view, read before the stop
    await loop.tick()
    await asyncio.gather(*loop._retiring)
    loop._gone.clear()
    gone = next(rid for rid in statuses if rid not in loop.tracked)
    loop._gone.add(gone)
    assert loop._remove_stray_servers(statuses) == []
    assert "haproxy_stray_removed" not in store.kinds()


async def test_after_a_restart_the_surplus_is_the_youngest_by_start_time() -> None:
    loop, backend, balancer, store, clock = make_loop(desired=2)
    await tick(loop, clock, 3)
    fresh, _, _, _, clock2 = make_loop(desired=1)
    fresh.backend, fresh.balancer, fresh.store = backend, balancer, store
    fresh.adopt(backend.adopt(store.replicas("web")))  # all adopted at the same instant
    oldest = min(store.replicas("web"), key=lambda r: r.started_at or 0.0).id
    await tick(fresh, clock2, 3)
    assert list(backend.running) == [oldest]
