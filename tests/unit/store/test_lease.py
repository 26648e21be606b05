"""The controller lease on SQLite with fake clocks: take-over by expiry, by a dead holder's
free personal lock, the frozen holder that wakes up, and the fence built on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skylift.backends.memory import MemoryBackend
from skylift.controller.fence import Fence, Fenced, FencedBackend, fenced_store
from skylift.model import Replica
from skylift.store import ControllerAlreadyRunning, Store
from skylift.store.lease import Lease, LeaseLost

DURATION = 9.0  # window (local trust, fast take-over grace) = 3 s


class Clocks:
    """One wall clock (the 'database' clock on SQLite) and one monotonic clock per process."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono: dict[str, float] = {}

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        for name in self.mono:
            self.mono[name] += seconds

    def monotonic(self, name: str) -> Callable[[], float]:
        self.mono.setdefault(name, 500.0)
        return lambda: self.mono[name]


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def store(tmp_path: Path, clocks: Clocks) -> Iterator[Store]:
    with Store.open(state_dir=tmp_path, clock=lambda: clocks.wall) as opened:
        yield opened


def lease(store: Store, clocks: Clocks, name: str) -> Lease:
    return store.controller_lease(name, duration=DURATION, monotonic=clocks.monotonic(name))


def test_first_taker_gets_epoch_1_and_a_live_holder_blocks_others(
    store: Store, clocks: Clocks
) -> None:
    a, b = lease(store, clocks, "a"), lease(store, clocks, "b")
    assert a.try_take() and a.epoch == 1 and a.valid()
    assert not b.try_take()
    assert b.current is not None and b.current.epoch == 1 and b.current.holder["owner"] == "a"
    clocks.advance(DURATION - 1)
    a.renew()
    clocks.advance(DURATION - 1)  # renewed in time: still a's
    assert not b.try_take()
    with pytest.raises(ControllerAlreadyRunning) as err:
        store.acquire_controller_lock("c")
    assert "'a'" in str(err.value) and "skylift down" in str(err.value)


def test_local_trust_ends_one_window_after_the_last_renewal_without_io(
    store: Store, clocks: Clocks
) -> None:
    a = lease(store, clocks, "a")
    assert a.try_take()
    clocks.advance(a.window - 0.1)
    assert a.valid()
    clocks.advance(0.2)
    assert not a.valid()  # the lease still runs in the store, but a must renew to act
    assert a.renew() == 1 and a.valid()


def test_expired_lease_is_taken_with_a_new_epoch_and_the_old_holder_learns_it(
    store: Store, clocks: Clocks
) -> None:
    a, b = lease(store, clocks, "a"), lease(store, clocks, "b")
    assert a.try_take()
    clocks.advance(DURATION + 0.1)  # a froze (SIGSTOP): its flock stays held, so b waits out
    assert b.try_take() and b.epoch == 2 and b.grace == 0.0
    assert not a.valid()  # a wakes: its monotonic clock says its trust ran out
    with pytest.raises(LeaseLost, match="epoch 2"):
        a.renew()
    assert not a.held and not a.valid()
    with pytest.raises(LeaseLost):
        a.renew()  # never again
    assert b.renew() == 2


def test_a_dead_holder_is_replaced_at_once_after_a_grace_of_one_window(
    store: Store, clocks: Clocks
) -> None:
    a, b = lease(store, clocks, "a"), lease(store, clocks, "b")
    assert a.try_take()
    assert not b.try_take()
    a.personal.close()  # what the kernel does to a SIGKILLed holder's flock
    assert b.try_take() and b.epoch == 2
    assert b.grace == pytest.approx(DURATION / 3)  # a might be alive without its lock
    with pytest.raises(LeaseLost):
        a.renew()


def test_release_hands_over_at_once_and_down_keeps_standbys_out(
    store: Store, clocks: Clocks
) -> None:
    a, b = lease(store, clocks, "a"), lease(store, clocks, "b")
    assert a.try_take()
    a.release()
    assert b.try_take(standby=True) and b.epoch == 2 and b.grace == 0.0
    b.release(down=True)
    c = lease(store, clocks, "c")
    assert not c.try_take(standby=True)  # `skylift down`: a standby must not start it again
    assert c.current is not None and c.current.holder.get("down")
    assert c.try_take()  # a plain `skylift up` may
    assert c.epoch == 3


def test_a_renewal_between_read_and_swap_beats_the_newcomer(
    store: Store, clocks: Clocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = lease(store, clocks, "a"), lease(store, clocks, "b")
    assert a.try_take()
    a.personal.close()  # looks dead to b ...
    real = b.personal.holder_gone

    def gone_but_renewed(conn: Any, token: str) -> bool:
        gone = real(conn, token)
        a.personal.hold()  # ... but it comes back and renews before b swaps
        a.renew()
        return gone

    monkeypatch.setattr(b.personal, "holder_gone", gone_but_renewed)
    assert not b.try_take()  # the swap saw another serial
    assert b.epoch is None and a.renew() == 1


async def test_fence_refuses_and_stamps(store: Store, clocks: Clocks, tmp_path: Path) -> None:
    a, b = lease(store, clocks, "a"), lease(store, clocks, "b")
    assert a.try_take()
    fence = Fence(a)
    inner = MemoryBackend("web")
    backend = FencedBackend(inner, fence)
    records = fenced_store(store, fence)

    replica = await backend.start("web", "web-1")
    assert replica.handle["epoch"] == "1"
    records.upsert_replica(replica)
    assert store.replicas("web")[0].handle["epoch"] == "1"
    records.add_event("replica_started", "started", service="web", data={"replica": "web-1"})
    assert store.events()[-1].data == {"replica": "web-1", "epoch": 1}

    clocks.advance(a.window + 0.1)  # not renewed (store slow): actions wait, words do not
    with pytest.raises(Fenced, match="not renewed"):
        records.set_desired("web", 4)
    records.add_event("store_slow", "still mine", data={})
    assert store.events()[-1].data == {"epoch": 1}

    lost: list[str] = []
    fence.on_lost.append(lost.append)
    clocks.advance(DURATION + 1)  # a frozen past its lease; b takes over
    assert b.try_take() and b.epoch == 2
    calls = len(inner.calls)
    with pytest.raises(Fenced, match="acts on nothing"):
        await backend.start("web", "web-2")  # local trust gone -> re-verify -> lost
    with pytest.raises(Fenced):
        await backend.stop(replica, grace=1.0)
    with pytest.raises(Fenced):
        records.upsert_replica(Replica("web-3", "web", "127.0.0.1", 1))
    with pytest.raises(Fenced):
        records.set_desired("web", 5)
    assert len(inner.calls) == calls  # nothing reached the backend
    assert [r.id for r in records.replicas("web")] == ["web-1"]  # reads pass through
    assert store.desired("web") is None
    assert len(lost) == 1 and "epoch 2" in lost[0]
    with pytest.raises(Fenced):  # once it knows it lost the lease, it writes nothing at all
        records.add_event("replica_started", "stale", service="web", data={})
    assert store.events()[-1].data == {"epoch": 1}


async def test_renewal_is_not_starved_by_a_hung_default_executor(
    store: Store, clocks: Clocks
) -> None:
    """A frozen dockerd can fill asyncio's default executor with hung calls; the lease
    renews on a thread of its own, or every service would stop acting."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    a = lease(store, clocks, "a")
    assert a.try_take()
    fence = Fence(a, timeout=2.0)
    loop = asyncio.get_running_loop()
    release = threading.Event()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    hung = loop.run_in_executor(None, release.wait, 30)
    try:
        clocks.advance(a.window + 0.1)  # local trust gone: the next action must renew
        assert await fence.ensure("start web-9") == 1
    finally:
        release.set()
        await hung
