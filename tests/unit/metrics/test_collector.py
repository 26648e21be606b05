"""Collector: samples become Observations; failing sources make metrics MISSING, once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from skylift.engine.model import Series
from skylift.metrics.base import SourceError
from skylift.metrics.collector import Collector
from skylift.metrics.window import MetricStore
from tests.polling import wait_for_async


class ScriptedSource:
    """In-memory source: answers what the test sets for each service, or raises it."""

    def __init__(self, name: str, metrics: frozenset[str]) -> None:
        self.name = name
        self.metrics = metrics
        self.answer: dict[str, Mapping[str, float] | BaseException] = {}
        self.delay = 0.0

    def provides(self, service: str) -> frozenset[str]:
        return self.metrics

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answer.get(service, {})
        if isinstance(answer, BaseException):
            raise answer
        return answer


def make() -> tuple[Collector, ScriptedSource, ScriptedSource]:
    stats = ScriptedSource("haproxy-stats", frozenset({"rps", "connections"}))
    proc = ScriptedSource("process", frozenset({"cpu"}))
    return Collector(["web", "api"], [stats, proc], interval=1.0, stale_after=3), stats, proc


async def test_samples_become_series() -> None:
    collector, stats, proc = make()
    for t in range(5):
        stats.answer["web"] = {"rps": 10.0 * t, "connections": 3.0}
        proc.answer["web"] = {"cpu": 0.5}
        obs = await collector.collect(float(t))
    web = obs["web"]
    assert web.rps == Series((0.0, 1.0, 2.0, 3.0, 4.0), (0.0, 10.0, 20.0, 30.0, 40.0))
    assert web.cpu is not None and list(web.cpu.values) == [0.5] * 5
    assert web.p95_latency is None and web.memory is None
    assert obs["api"].rps is None  # answered nothing: no sample
    assert collector.transitions() == []


async def test_failing_then_recovered_exactly_once() -> None:
    collector, stats, proc = make()
    stats.answer["web"] = {"rps": 5.0, "connections": 1.0}
    await collector.collect(0.0)
    stats.answer["web"] = SourceError("show stat failed: socket gone", "check HAProxy")
    obs = await collector.collect(1.0)
    assert obs["web"].rps is not None  # one failed poll: recent samples still count
    obs = await collector.collect(2.0)
    assert collector.transitions() == []
    obs = await collector.collect(3.0)  # 3 intervals without a fresh sample
    assert obs["web"].rps is None and obs["web"].connections is None
    (change,) = collector.transitions()
    assert (change.source, change.service, change.kind, change.at) == (
        "haproxy-stats",
        "web",
        "failing",
        3.0,
    )
    assert change.metrics == ("connections", "rps")
    assert "socket gone: check HAProxy" in change.message
    assert "source haproxy-stats for service web failing" in change.message
    for t in (4.0, 5.0, 6.0):
        await collector.collect(t)
    assert collector.transitions() == []  # still failing: said once
    assert [h.service for h in collector.failing()] == ["web"]
    stats.answer["web"] = {"rps": 7.0, "connections": 1.0}
    obs = await collector.collect(7.0)
    assert obs["web"].rps is not None and obs["web"].rps.values[-1] == 7.0
    (back,) = collector.transitions()
    assert back.kind == "recovered" and back.at == 7.0
    assert back.message.startswith("source haproxy-stats for service web recovered")
    await collector.collect(8.0)
    assert collector.transitions() == []


async def test_source_that_never_answers_fails_after_stale_period() -> None:
    collector, stats, _ = make()
    stats.answer["api"] = SourceError("nope")
    for t in range(3):
        await collector.collect(10.0 + t)
        assert collector.transitions() == []
    await collector.collect(13.0)
    (change,) = collector.transitions()
    assert "no sample yet" in change.message and change.service == "api"


async def test_slow_source_times_out_as_a_failure() -> None:
    stats = ScriptedSource("haproxy-stats", frozenset({"rps"}))
    stats.delay = 0.5
    collector = Collector(["web"], [stats], interval=1.0, stale_after=0, timeout=0.01)
    await collector.collect(0.0)
    (change,) = collector.transitions()
    assert "did not answer within 0.01s" in change.message


async def test_one_source_raising_for_one_service_leaves_the_others_on_time() -> None:
    """Finding 9: a source that raises for service A (an outage or a bug) fails
    (that source, A) alone; every other pair keeps a sample at every tick."""
    collector, stats, proc = make()
    stats.answer["api"] = {"rps": 4.0, "connections": 1.0}
    proc.answer["web"] = proc.answer["api"] = {"cpu": 0.5}
    stats.answer["web"] = KeyError("bug")  # not a SourceError: a bug in the source
    ticks = [float(t) for t in range(6)]
    for t in ticks:  # the clock is the argument: no sleep, no wall time
        obs = await collector.collect(t)
        assert obs["web"].rps is None and obs["web"].connections is None  # MISSING at once
    api_rps = obs["api"].rps
    assert api_rps is not None and list(api_rps.times) == ticks  # on time, every tick
    for service in ("web", "api"):
        cpu = obs[service].cpu
        assert cpu is not None and list(cpu.times) == ticks
    (change,) = collector.transitions()  # a bug fails its pair at once, said once
    assert (change.source, change.service, change.kind, change.at) == (
        "haproxy-stats",
        "web",
        "failing",
        0.0,
    )
    assert isinstance(change.bug, KeyError)  # the controller logs its traceback
    assert "raised KeyError('bug') for web" in change.message
    health = {(h.source, h.service): (h.failing, h.errors) for h in collector.health()}
    assert health == {
        ("haproxy-stats", "web"): (True, 6),
        ("haproxy-stats", "api"): (False, 0),
        ("process", "web"): (False, 0),
        ("process", "api"): (False, 0),
    }
    stats.answer["web"] = {"rps": 2.0, "connections": 1.0}
    obs = await collector.collect(6.0)
    assert obs["web"].rps is not None
    (back,) = collector.transitions()
    assert (back.kind, back.service, back.bug) == ("recovered", "web", None)


async def test_an_outage_for_one_service_leaves_the_others_on_time() -> None:
    collector, stats, _ = make()
    stats.answer["api"] = {"rps": 4.0}
    stats.answer["web"] = SourceError("backend be_web is not in HAProxy's stats")
    for t in range(5):
        obs = await collector.collect(float(t))
    assert obs["web"].rps is None
    api_rps = obs["api"].rps
    assert api_rps is not None and list(api_rps.times) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [(c.service, c.kind) for c in collector.transitions()] == [("web", "failing")]


async def test_cancellation_is_not_a_source_failure() -> None:
    collector, stats, _ = make()
    stats.answer["web"] = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await collector.collect(0.0)


def test_one_owner_per_metric() -> None:
    a = ScriptedSource("haproxy-stats", frozenset({"rps"}))
    b = ScriptedSource("prometheus", frozenset({"rps"}))
    with pytest.raises(ValueError, match="rps comes from both haproxy-stats and prometheus"):
        Collector(["web"], [a, b], interval=1.0)
    with pytest.raises(ValueError, match="share a name"):
        Collector(["web"], [a, a], interval=1.0)


async def test_custom_metrics_are_kept_for_status_only() -> None:
    prom = ScriptedSource("prometheus", frozenset({"jobs_waiting"}))
    prom.answer["web"] = {"jobs_waiting": 12.0}
    collector = Collector(["web"], [prom], interval=1.0)
    obs = await collector.collect(1.0)
    assert obs["web"].queue is None
    assert collector.latest("web") == {"jobs_waiting": (1.0, 12.0)}


def test_store_is_bounded_by_age_and_count() -> None:
    store = MetricStore(window=10.0, max_samples=5)
    for t in range(20):
        store.add("web", "rps", float(t), float(t))
    obs = store.observations("web", 19.0)
    assert obs.rps is not None and list(obs.rps.times) == [15.0, 16.0, 17.0, 18.0, 19.0]
    assert obs.window == 10.0
    assert store.observations("web", 40.0).rps is None  # all older than the window
    store.add("web", "cpu", 50.0, 0.1)
    store.add("web", "cpu", 50.0, 0.2)  # same tick twice: replaced
    store.add("web", "cpu", 49.0, 0.9)  # out of order: dropped
    cpu = store.observations("web", 50.0).cpu
    assert cpu is not None and list(cpu.values) == [0.2]
    assert store.observations("web", 50.0, missing=["cpu"]).cpu is None


async def test_a_slow_pair_does_not_hold_back_the_others() -> None:
    """A source stuck for service A (up to the timeout) delays no sample of service B."""

    class StuckForWeb:
        name = "haproxy-stats"
        release = asyncio.Event()

        def provides(self, service: str) -> frozenset[str]:
            return frozenset({"rps"})

        async def sample(self, service: str, now: float) -> Mapping[str, float]:
            if service == "web":
                await self.release.wait()
            return {"rps": 3.0}

    source = StuckForWeb()
    collector = Collector(["web", "api"], [source], interval=1.0, timeout=60.0)
    poll = asyncio.create_task(collector.collect(7.0))
    await wait_for_async(lambda: "rps" in collector.latest("api"), 5, "api's sample")
    assert collector.latest("api") == {"rps": (7.0, 3.0)}  # stored while web still waits
    assert not poll.done()
    source.release.set()
    obs = await poll
    assert obs["web"].rps is not None
