"""Docker stats documents (cgroup v1 and v2 shapes) turned into cpu and memory fractions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from skylift.metrics.base import SourceError
from skylift.metrics.docker_stats import DockerStatsSource, usage_from
from skylift.metrics.resources import Resources
from skylift.model import Replica, ReplicaState

MiB = 2**20


def doc(cpu_ns: int, usage: int, inactive: int, *, v2: bool = False) -> dict[str, Any]:
    key = "inactive_file" if v2 else "total_inactive_file"
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}},
        "memory_stats": {"usage": usage, "stats": {key: inactive}},
    }


class Engine:
    """Serves prepared stats documents per container, one per call."""

    def __init__(self, docs: Mapping[str, list[dict[str, Any]]]) -> None:
        self.docs = {k: list(v) for k, v in docs.items()}
        self.fail: Exception | None = None

    def stats(self, container_id: str) -> Mapping[str, Any]:
        if self.fail is not None:
            raise self.fail
        return self.docs[container_id].pop(0)


def replica(rid: str, state: ReplicaState = ReplicaState.READY) -> Replica:
    return Replica(
        id=rid, service="web", host="127.0.0.1", port=1, state=state,
        handle={"container_id": f"c-{rid}"},
    )  # fmt: skip


def test_memory_excludes_reclaimable_page_cache_in_both_cgroup_versions() -> None:
    for v2 in (False, True):
        usage = usage_from(doc(2_000_000_000, 300 * MiB, 100 * MiB, v2=v2), at=5.0)
        assert usage is not None
        assert usage.memory == 200 * MiB and usage.cpu_seconds == 2.0


def test_a_stopped_container_has_no_reading() -> None:
    assert usage_from({"cpu_stats": {}, "memory_stats": {}}, at=1.0) is None


async def test_cpu_from_the_second_poll_memory_at_once_averaged_over_ready() -> None:
    ticks = iter([10.0, 10.0, 12.0, 12.0])
    engine = Engine(
        {
            "c-a": [doc(0, 64 * MiB, 0), doc(1_000_000_000, 64 * MiB, 0)],  # 0.5 core for 2 s
            "c-b": [doc(5 * 10**9, 32 * MiB, 0), doc(5 * 10**9, 32 * MiB, 0)],  # idle
        }
    )
    replicas = [replica("a"), replica("b"), replica("c", ReplicaState.STARTING)]
    source = DockerStatsSource(
        lambda s: replicas,
        {"web": Resources(cpu=0.5, memory=128 * MiB)},
        {"web": engine},
        clock=lambda: next(ticks),
    )
    assert source.provides("web") == {"cpu", "memory"}
    assert source.provides("other") == frozenset()
    first = await source.sample("web", 1.0)
    assert first == {"memory": pytest.approx((64 + 32) / 2 / 128)}
    second = await source.sample("web", 2.0)
    assert second["cpu"] == pytest.approx((1.0 + 0.0) / 2)  # a at its full 0.5, b idle


async def test_engine_failure_is_a_source_error_with_a_hint() -> None:
    engine = Engine({})
    engine.fail = ConnectionError("socket gone")
    source = DockerStatsSource(
        lambda s: [replica("a")], {"web": Resources(memory=MiB)}, {"web": engine}
    )
    with pytest.raises(SourceError, match="dockerd"):
        await source.sample("web", 1.0)
