"""HAProxy stats: CSV rows, rates from counters (resets too), the source's answers."""

from __future__ import annotations

import pytest

from skylift.lb.errors import SocketUnavailable
from skylift.metrics.base import SourceError
from skylift.metrics.haproxy_stats import (
    STAT_COMMAND,
    CounterHistory,
    CounterRate,
    HAProxyStatsSource,
    Traffic,
    parse_stat_rows,
)

HEADER = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,rate,req_rate,req_tot,\n"


def csv_answer(*rows: tuple[str, str, int, int, int, str]) -> str:
    """rows of (pxname, svname, qcur, scur, stot, req_tot) in HAProxy's CSV layout."""
    lines = [HEADER]
    for px, sv, qcur, scur, stot, req_tot in rows:
        lines.append(f"{px},{sv},{qcur},0,{scur},0,,{stot},UP,0,,{req_tot},\n")
    return "".join(lines) + "\n"


class FakeRuntime:
    """In-memory stand-in for RuntimeClient.command: answers queued texts or raises."""

    def __init__(self) -> None:
        self.answers: list[str | Exception] = []
        self.commands: list[str] = []

    async def command(self, command: str) -> str:
        self.commands.append(command)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_parse_rows_keeps_haproxy_column_names() -> None:
    rows = parse_stat_rows(csv_answer(("be_web", "BACKEND", 1, 5, 10, "42")))
    assert rows == [
        {
            "pxname": "be_web",
            "svname": "BACKEND",
            "qcur": "1",
            "qmax": "0",
            "scur": "5",
            "smax": "0",
            "slim": "",
            "stot": "10",
            "status": "UP",
            "rate": "0",
            "req_rate": "",
            "req_tot": "42",
        }
    ]


def test_parse_refuses_an_error_answer() -> None:
    with pytest.raises(ValueError, match="Unknown command"):
        parse_stat_rows("Unknown command: 'show stats'\n")


def test_counter_rate_and_reset() -> None:
    rate = CounterRate()
    assert rate.update(0.0, 100) is None
    assert rate.update(2.0, 300) == pytest.approx(100.0)
    assert rate.update(2.0, 350) is None  # same poll twice: no interval
    assert rate.update(3.0, 20) == pytest.approx(20.0)  # reload: new worker counts from 0
    assert rate.resets == 1
    assert rate.update(4.0, 70) == pytest.approx(50.0)


async def test_source_reads_backend_rows_and_rates() -> None:
    runtime = FakeRuntime()
    runtime.answers = [
        csv_answer(
            ("fe_web", "FRONTEND", 0, 9, 50, "100"),
            ("be_web", "BACKEND", 2, 7, 40, "1000"),
            ("be_web", "r1", 1, 4, 20, ""),
            ("be_web", "r2", 0, 3, 20, ""),
            ("be_api", "BACKEND", 0, 1, 5, "10"),
        ),
        csv_answer(("be_web", "BACKEND", 0, 3, 41, "1600"), ("be_api", "BACKEND", 0, 0, 6, "0")),
    ]
    source = HAProxyStatsSource(runtime, backend_of=lambda s: f"be_{s}")
    assert await source.sample("web", 10.0) == {"connections": 7.0, "queue": 3.0}
    assert await source.sample("api", 10.0) == {"connections": 1.0, "queue": 0.0}
    assert runtime.commands == [STAT_COMMAND]  # one show stat per poll serves every service
    assert (await source.sample("web", 12.0))["rps"] == pytest.approx(300.0)
    assert (await source.sample("api", 12.0))["rps"] == pytest.approx(0.0)  # reset: 0 since


async def test_tcp_backend_counts_sessions() -> None:
    runtime = FakeRuntime()
    runtime.answers = [
        csv_answer(("be_db", "BACKEND", 0, 1, 10, "")),
        csv_answer(("be_db", "BACKEND", 0, 1, 30, "")),
    ]
    source = HAProxyStatsSource(runtime, backend_of=lambda s: f"be_{s}", metrics=frozenset({"rps"}))
    assert await source.sample("db", 0.0) == {}
    assert await source.sample("db", 1.0) == {"rps": 20.0}


async def test_failures_are_typed_with_a_hint() -> None:
    runtime = FakeRuntime()
    runtime.answers = [
        SocketUnavailable(STAT_COMMAND, "/x/haproxy.sock: [Errno 2] No such file"),
        csv_answer(("be_other", "BACKEND", 0, 0, 0, "0")),
    ]
    source = HAProxyStatsSource(runtime, backend_of=lambda s: f"be_{s}")
    with pytest.raises(SourceError, match="No such file") as info:
        await source.sample("web", 1.0)
    assert "stats socket" in info.value.hint
    with pytest.raises(SourceError, match="be_web is not in"):
        await source.sample("web", 2.0)


def test_default_backend_name_comes_from_the_renderer() -> None:
    source = HAProxyStatsSource(FakeRuntime())
    assert source.backend_of("web") == "be_web"


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu"):
        HAProxyStatsSource(FakeRuntime(), metrics=frozenset({"cpu"}))


def test_counter_history_counts_inside_the_window() -> None:
    history = CounterHistory(keep=10.0)
    assert history.increase(0.0, 5.0) is None  # nothing yet
    history.add(0.0, 100)
    assert history.increase(0.0, 5.0) is None  # one reading: too early to tell
    for t, value in [(1.0, 100), (2.0, 103), (2.0, 999), (3.0, 5), (4.0, 5)]:
        history.add(t, value)  # (2.0, 999): the same poll twice is ignored
    assert history.increase(4.0, 10.0) == 3 + 5  # 3, then a reset: 5 since
    assert history.increase(4.0, 1.0) == 0  # idle in the last second
    assert history.increase(4.0, 2.5) == 5
    history.add(30.0, 5)
    assert history.increase(30.0, 10.0) is None  # old readings aged out: too early again


async def test_requests_share_the_poll_with_sample() -> None:
    runtime = FakeRuntime()
    runtime.answers = [
        csv_answer(("be_web", "BACKEND", 0, 0, 40, "1000")),
        csv_answer(("be_web", "BACKEND", 0, 0, 41, "1000")),
        csv_answer(("be_web", "BACKEND", 1, 2, 42, "1007"), ("be_web", "r1", 1, 2, 20, "")),
        SocketUnavailable(STAT_COMMAND, "/x/haproxy.sock: [Errno 2] No such file"),
    ]
    source = HAProxyStatsSource(runtime, backend_of=lambda s: f"be_{s}")
    assert await source.requests("web", 1.0, 30.0) is None  # one reading
    await source.sample("web", 1.0)
    assert len(runtime.commands) == 1  # cached for the tick
    assert await source.requests("web", 2.0, 30.0) == Traffic(0, 0)  # idle
    seen = await source.requests("web", 3.0, 30.0)  # 2 running, 1 + 1 queued
    assert seen == Traffic(counted=7, in_flight=4) and seen.finished == 3
    with pytest.raises(SourceError, match="No such file"):
        await source.requests("web", 4.0, 30.0)
