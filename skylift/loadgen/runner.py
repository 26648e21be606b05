"""The open-loop runner: every request leaves at its scheduled time, whatever came before.

Each request is its own task, launched when its send time comes; a slow
response never delays the next send, and latency is measured from the
scheduled time, so queueing in the system under test shows up in the numbers
instead of silently lowering the offered load (coordinated omission).

Errors a request can end in (each counted once, by kind)::

    http_<status>     a non-2xx response
    connect           httpx.ConnectError (refused, unreachable, DNS)
    timeout           no full response within ``plan.timeout`` (any phase)
    read / write      the connection broke mid-request (incl. protocol errors)
    other             any other httpx.HTTPError or OSError
    overload_client   never sent: ``plan.max_in_flight`` requests were in flight

Anything else raised inside a request is a bug and propagates from ``run_load``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
from collections.abc import Callable
from types import TracebackType

import httpx

from skylift.loadgen.plan import LoadPlan
from skylift.loadgen.report import (
    CONNECT,
    OTHER,
    OVERLOAD_CLIENT,
    READ,
    TIMEOUT,
    WRITE,
    LoadProgress,
    LoadReport,
    Recorder,
)

ProgressCallback = Callable[[LoadProgress], None]

# Idle keep-alive connections kept per client; more would only hold sockets open.
_MAX_KEEPALIVE = 100


async def run_load(
    plan: LoadPlan,
    *,
    on_progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
    progress_interval: float = 0.5,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadReport:
    """Send ``plan`` open-loop and report what happened.

    ``stop`` ends sending early (requests in flight still finish, each within
    its timeout); ``on_progress`` is called every ``progress_interval``
    seconds and once at the end, from the event loop. ``transport`` replaces
    the network (``httpx.MockTransport`` in unit tests).
    """
    loop = asyncio.get_running_loop()
    rec = Recorder(planned=len(plan.send_times))
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(
        max_connections=plan.max_in_flight,
        max_keepalive_connections=min(plan.max_in_flight, _MAX_KEEPALIVE),
    )
    stop_waiter = asyncio.ensure_future((stop or asyncio.Event()).wait())
    ticker: asyncio.Task[None] | None = None
    stopped = False
    async with httpx.AsyncClient(
        base_url=plan.target,
        timeout=httpx.Timeout(plan.timeout),
        limits=limits,
        headers=dict(plan.headers),
        transport=transport,
    ) as client:
        t0 = loop.time()
        if on_progress is not None:
            ticker = asyncio.create_task(_tick(on_progress, rec, loop, t0, progress_interval))
        try:
            for offset in plan.send_times:
                due = t0 + offset
                delay = due - loop.time()
                if delay > 0:  # a sleep that a stop cuts short
                    await asyncio.wait({stop_waiter}, timeout=delay)
                if stop_waiter.done():
                    stopped = True
                    break
                rec.sent += 1
                rec.last_send = loop.time() - t0
                if rec.in_flight >= plan.max_in_flight:
                    rec.error(OVERLOAD_CLIENT, None)
                    continue
                rec.in_flight += 1
                task = asyncio.create_task(_request(client, plan, rec, loop, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            stop_waiter.cancel()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
    duration = loop.time() - t0
    if on_progress is not None:
        on_progress(rec.progress(duration))
    return rec.report(target=plan.target, path=plan.path, duration=duration, stopped_early=stopped)


async def _tick(
    on_progress: ProgressCallback,
    rec: Recorder,
    loop: asyncio.AbstractEventLoop,
    t0: float,
    interval: float,
) -> None:
    while True:
        await asyncio.sleep(interval)
        on_progress(rec.progress(loop.time() - t0))


async def _request(
    client: httpx.AsyncClient,
    plan: LoadPlan,
    rec: Recorder,
    loop: asyncio.AbstractEventLoop,
    due: float,
) -> None:
    """One request; outcome and latency (from ``due``) go to ``rec``."""
    rec.lags.append(max(0.0, loop.time() - due))
    kind: str | None = None
    try:
        async with asyncio.timeout(plan.timeout):
            response = await client.get(plan.path)
    except (TimeoutError, httpx.TimeoutException):
        kind = TIMEOUT
    except httpx.ConnectError:
        kind = CONNECT
    except (httpx.ReadError, httpx.RemoteProtocolError):
        kind = READ
    except httpx.WriteError:
        kind = WRITE
    except (httpx.HTTPError, OSError):
        kind = OTHER
    finally:
        rec.in_flight -= 1
    latency = loop.time() - due
    if kind is not None:
        rec.error(kind, latency)
    else:
        rec.response(response.status_code, latency, _replica(response))


def _replica(response: httpx.Response) -> str | None:
    """Which replica answered, for checking traffic spread: an ``X-Replica`` header,
    else the ``replica`` key of a JSON object body."""
    named = response.headers.get("x-replica")
    if named:
        return str(named)
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("replica") is not None:
        return str(body["replica"])
    return None


class LoadHandle:
    """A run on its own thread and event loop, for tests that act while load runs.

    Use as a context manager (stops and waits on exit) or call ``stop()`` and
    ``result()``; ``progress`` is the latest snapshot.
    """

    def __init__(
        self,
        plan: LoadPlan,
        on_progress: ProgressCallback | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.plan = plan
        self._transport = transport
        self.future: concurrent.futures.Future[LoadReport] = concurrent.futures.Future()
        self.progress: LoadProgress | None = None
        self._on_progress = on_progress
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="skylift-load", daemon=True)

    def start(self) -> LoadHandle:
        self.thread.start()
        self._ready.wait()
        return self

    def stop(self) -> None:
        """Stop sending early; in-flight requests still finish. Safe after the run ended."""
        self._ready.wait()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: run is over
                self._loop.call_soon_threadsafe(self._stop.set)

    def result(self, timeout: float | None = None) -> LoadReport:
        """Wait for the report (raises ``TimeoutError`` after ``timeout`` seconds)."""
        return self.future.result(timeout)

    def __enter__(self) -> LoadHandle:
        return self.start() if self.thread.ident is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.stop()
        self.thread.join()

    def _progress(self, snapshot: LoadProgress) -> None:
        self.progress = snapshot
        if self._on_progress is not None:
            self._on_progress(snapshot)

    def _run(self) -> None:
        async def main() -> LoadReport:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            return await run_load(
                self.plan, on_progress=self._progress, stop=self._stop, transport=self._transport
            )

        try:
            report = asyncio.run(main())
        except BaseException as exc:  # handed to the caller through the future
            self.future.set_exception(exc)
        else:
            self.future.set_result(report)
        finally:
            self._ready.set()


def run_load_in_thread(
    plan: LoadPlan,
    *,
    on_progress: ProgressCallback | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadHandle:
    """Start ``plan`` on a background thread; returns once the run's loop is up.

    ``on_progress`` is called on the load thread.
    """
    return LoadHandle(plan, on_progress, transport).start()
