"""Follows a backend's event stream so a dead replica is replaced at once.

Polling alone finds a dead container only at the next tick (and a hung one
only after ``fall`` failed health checks). The Docker events stream says so
the moment it happens: each death or HEALTHCHECK failure wakes the service's
loop, which then acts as it would on a poll. Polling stays as the safety net:
when the stream breaks (dockerd restarts), the watcher says so once and
subscribes again with a capped back-off, and ticks keep their pace meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from skylift.controller.protocols import EventSource
from skylift.controller.recorder import Recorder
from skylift.controller.service import ServiceLoop

log = structlog.get_logger("skylift.controller")

RESUBSCRIBE_MAX = 30.0


async def watch_events(
    loop: ServiceLoop,
    source: EventSource,
    recorder: Recorder,
    stop: asyncio.Event,
    *,
    initial_backoff: float = 1.0,
) -> None:
    """Feed ``source``'s events to ``loop`` until ``stop``; never raises (but on cancel)."""
    failures = 0
    while not stop.is_set():
        try:
            stream = await source.events()
        except Exception as exc:  # the Engine is unreachable: polling covers meanwhile
            failures += 1
            await _lost(loop, recorder, exc, failures, initial_backoff, stop)
            continue
        if failures:
            recorder.event(
                "events_stream_restored",
                "backend events stream open again: deaths are acted on at once",
                service=loop.name,
            )
        failures = 0
        try:
            async for event in stream:
                loop.on_backend_event(event)
        except Exception as exc:  # stream ended (dockerd restart): subscribe again
            failures += 1
            await _lost(loop, recorder, exc, failures, initial_backoff, stop)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()


async def _lost(
    loop: ServiceLoop,
    recorder: Recorder,
    exc: Exception,
    failures: int,
    initial_backoff: float,
    stop: asyncio.Event,
) -> None:
    delay = min(RESUBSCRIBE_MAX, initial_backoff * 2 ** (failures - 1))
    if failures == 1:
        recorder.event(
            "events_stream_lost",
            f"backend events stream unavailable ({exc}); replica deaths are found by polling "
            f"until it returns; retrying in {delay:.0f}s",
            service=loop.name,
            level="warning",
        )
    log.warning("events_stream_lost", service=loop.name, error=str(exc), retry_in=delay)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
