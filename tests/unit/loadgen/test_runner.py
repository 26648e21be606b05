"""The open-loop runner against httpx.MockTransport: no sockets, real (short) time."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest

from skylift.loadgen import LoadProgress, constant_plan, run_load, run_load_in_thread

TARGET = "http://app.test"


def json_response(status: int, body: dict[str, object]) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(body), headers={"content-type": "application/json"}
    )


async def test_all_ok_and_replicas_counted() -> None:
    replicas = itertools.cycle(["a", "b"])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/work"
        assert request.url.params["ms"] == "5"
        return json_response(200, {"replica": next(replicas)})

    plan = constant_plan(TARGET, "/work?ms=5", rps=200, duration=0.25)
    report = await run_load(plan, transport=httpx.MockTransport(handler))
    assert (report.sent, report.ok, report.errors) == (50, 50, 0)
    assert report.replicas == {"a": 25, "b": 25}
    assert report.status_codes == {"200": 50}
    assert report.rate == pytest.approx(200, rel=0.1)
    assert 0 < report.p50_ms <= report.p95_ms <= report.p99_ms <= report.max_ms


async def test_error_kinds() -> None:
    counter = itertools.count()

    def handler(request: httpx.Request) -> httpx.Response:
        match next(counter) % 5:
            case 0:
                return httpx.Response(200, text="plain, no replica")
            case 1:
                return httpx.Response(503)
            case 2:
                raise httpx.ConnectError("refused", request=request)
            case 3:
                raise httpx.ReadError("reset", request=request)
            case _:
                raise httpx.UnsupportedProtocol("odd", request=request)

    plan = constant_plan(TARGET, "/", rps=500, duration=0.02)
    report = await run_load(plan, transport=httpx.MockTransport(handler))
    assert report.sent == 10
    assert report.ok == 2
    assert report.errors_by_kind == {"connect": 2, "http_503": 2, "other": 2, "read": 2}
    assert report.replicas == {}


async def test_open_loop_sends_on_schedule_while_server_is_slow() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return json_response(200, {"replica": "slow"})

    plan = constant_plan(TARGET, "/", rps=20, duration=0.5)
    report = await run_load(plan, transport=httpx.MockTransport(slow))
    assert report.ok == 10
    assert report.lag_max_ms < 200  # on time, not after the previous reply (>= 300 ms)
    assert report.p50_ms >= 300
    assert report.duration_s < 1.2  # a closed loop would need 10 x 0.3 s


async def test_latency_counts_from_schedule_when_sending_is_late() -> None:
    # A blocked event loop makes sends late; the wait must be in the latency.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    async def block() -> None:
        await asyncio.sleep(0)
        time.sleep(0.2)  # noqa: ASYNC251 -- blocks the loop: a stand-in for an overloaded client

    plan = constant_plan(TARGET, "/", rps=100, duration=0.1)
    blocker = asyncio.create_task(block())
    report = await run_load(plan, transport=httpx.MockTransport(handler))
    await blocker
    assert report.ok == 10
    assert report.max_ms >= 190
    assert report.lag_max_ms >= 190


async def test_in_flight_bound_counts_overload_instead_of_delaying() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5)
        return httpx.Response(200)

    plan = constant_plan(TARGET, "/", rps=50, duration=0.2, max_in_flight=2)
    report = await run_load(plan, transport=httpx.MockTransport(slow))
    assert report.sent == 10
    assert report.ok == 2
    assert report.errors_by_kind == {"overload_client": 8}


async def test_timeout_is_an_error_kind_with_its_latency() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    plan = constant_plan(TARGET, "/", rps=10, duration=0.1, timeout=0.05)
    report = await run_load(plan, transport=httpx.MockTransport(hang))
    assert report.errors_by_kind == {"timeout": 1}
    assert 50 <= report.max_ms < 1000


async def test_stop_ends_sending_early_and_progress_is_reported() -> None:
    stop = asyncio.Event()
    seen: list[LoadProgress] = []
    asyncio.get_running_loop().call_later(0.2, stop.set)
    plan = constant_plan(TARGET, "/", rps=100, duration=10)
    report = await run_load(
        plan,
        stop=stop,
        on_progress=seen.append,
        progress_interval=0.05,
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
    )
    assert report.stopped_early
    assert 5 < report.sent < 100
    assert report.planned == 1000
    assert report.ok == report.sent
    assert len(seen) >= 2
    assert seen[-1].sent == report.sent


def test_run_in_thread_can_be_stopped_from_the_caller() -> None:
    plan = constant_plan(TARGET, "/", rps=100, duration=30)
    transport = httpx.MockTransport(lambda r: json_response(200, {"replica": "t"}))
    with run_load_in_thread(plan, transport=transport) as load:
        assert not load.future.done()
        load.stop()
    report = load.result(timeout=5)
    assert report.stopped_early
    assert report.ok == report.sent < 3000


def test_run_in_thread_to_completion() -> None:
    plan = constant_plan(TARGET, "/", rps=100, duration=0.2)
    load = run_load_in_thread(plan, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    report = load.result(timeout=5)
    assert (report.sent, report.ok, report.stopped_early) == (20, 20, False)
    assert load.progress is not None and load.progress.sent == 20
