"""Backend events wake the service loop; a broken stream is reported once and resubscribed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from skylift.controller.watch import watch_events
from tests.polling import wait_for_async
from tests.unit.controller.test_service_loop import make_loop, settle


@dataclass(frozen=True)
class Event:
    replica_id: str
    kind: str
    exit_code: int | None = None


class Stream:
    def __init__(self, events: list[Event], error: Exception | None) -> None:
        self.events = events
        self.error = error
        self.closed = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        for event in self.events:
            yield event
        if self.error is not None:
            raise self.error
        await asyncio.Event().wait()  # an open stream: nothing more happens

    async def aclose(self) -> None:
        self.closed = True


class Source:
    """Fails the first ``fail_first`` subscriptions, then hands out prepared streams."""

    def __init__(self, *streams: Stream, fail_first: int = 0) -> None:
        self.streams = list(streams)
        self.fail_first = fail_first
        self.opened: list[Stream] = []
        self.attempts = 0

    async def events(self) -> Stream:
        self.attempts += 1
        if self.attempts <= self.fail_first or not self.streams:
            raise ConnectionError("engine unreachable")
        stream = self.streams.pop(0)
        self.opened.append(stream)
        return stream


async def test_a_death_wakes_the_loop_and_is_named_in_the_exit_event() -> None:
    loop, backend, _balancer, store, clock = make_loop()
    await settle(loop, clock)
    clock.now += 60
    victim = next(iter(backend.running))
    backend.crash(victim, code=137)
    loop.wake.clear()
    source = Source(Stream([Event(victim, "died", 137), Event("someone-else", "died")], None))
    stop = asyncio.Event()
    task = asyncio.create_task(watch_events(loop, source, loop.recorder, stop))
    try:
        await asyncio.wait_for(loop.wake.wait(), 5)
        await settle(loop, clock, ticks=1)
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    exited = [e for e in store.events_list if e["kind"] == "replica_exited"]
    assert [e["data"]["replica"] for e in exited] == [victim]
    assert exited[0]["data"]["detected_by"] == "backend_events"
    assert source.opened[0].closed


async def test_healthy_events_and_draining_replicas_do_not_wake() -> None:
    loop, backend, _balancer, _store, clock = make_loop(desired=1)
    await settle(loop, clock)
    (rid,) = backend.running
    loop.wake.clear()
    loop.on_backend_event(Event(rid, "healthy"))
    assert not loop.wake.is_set()
    loop.desired = 0
    await loop.tick()  # starts draining it: its death is ours
    loop.on_backend_event(Event(rid, "died", 0))
    assert not loop.wake.is_set()


async def test_lost_stream_is_reported_once_per_outage_then_resubscribed() -> None:
    loop, _backend, _balancer, store, clock = make_loop(desired=1)
    await settle(loop, clock)
    source = Source(
        Stream([], ConnectionError("dockerd restarted")), Stream([], None), fail_first=1
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        watch_events(loop, source, loop.recorder, stop, initial_backoff=0.01)
    )
    try:
        # refused, then a stream that breaks, then one that stays open
        await wait_for_async(lambda: len(source.opened) == 2, 10, "the second stream")
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert source.attempts >= 3
    kinds = [k for k in store.kinds() if k.startswith("events_stream")]
    assert kinds == [
        "events_stream_lost",  # first subscription refused
        "events_stream_restored",
        "events_stream_lost",  # the open stream broke: a new outage
        "events_stream_restored",
    ]
    assert all(s.closed for s in source.opened[:1])
