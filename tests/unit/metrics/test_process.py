"""Process stats on this test's own process (cheap, real /proc): fractions and guards."""

from __future__ import annotations

import os

import psutil
import pytest

from skylift.metrics.process import ProcessStatsSource, read_tree
from skylift.metrics.resources import Resources
from skylift.model import Replica, ReplicaState


def me(state: ReplicaState = ReplicaState.READY, started_at: float | None = None) -> Replica:
    return Replica(
        id="r1",
        service="web",
        host="127.0.0.1",
        port=1,
        state=state,
        pid=os.getpid(),
        started_at=psutil.Process().create_time() if started_at is None else started_at,
    )


def test_provides_follows_the_request() -> None:
    source = ProcessStatsSource(
        lambda s: [],
        {"web": Resources(cpu=0.5, memory=2**20), "api": Resources(cpu=1.0), "db": Resources()},
    )
    assert source.provides("web") == {"cpu", "memory"}
    assert source.provides("api") == {"cpu"}
    assert source.provides("db") == frozenset()
    assert source.provides("other") == frozenset()


async def test_memory_now_and_cpu_from_the_second_poll() -> None:
    ticks = iter([100.0, 102.0])
    replicas = [me()]
    source = ProcessStatsSource(
        lambda s: replicas, {"web": Resources(cpu=1.0, memory=2**30)}, clock=lambda: next(ticks)
    )
    first = await source.sample("web", 1.0)
    assert set(first) == {"memory"}
    # The whole tree counts: other tests may have left this process with live children.
    tree = read_tree(os.getpid(), None, lambda: 0.0)
    assert tree is not None
    assert first["memory"] == pytest.approx(tree.rss / 2**30, rel=0.5)
    second = await source.sample("web", 2.0)
    assert 0.0 <= second["cpu"] < 1.0  # CPU used in "2 s" of fake clock by this test


async def test_only_ready_replicas_of_this_process_count() -> None:
    replicas = [me(ReplicaState.STARTING), me(started_at=1.0)]  # not ready; PID reused
    source = ProcessStatsSource(lambda s: replicas, {"web": Resources(cpu=1.0, memory=2**20)})
    assert await source.sample("web", 1.0) == {}


def test_gone_process_reads_as_none() -> None:
    assert read_tree(2**22 + 12345, None, lambda: 0.0) is None
