"""The controller: one reconcile loop per service, plus what the API asks of it.

observe -> decide -> act -> record, and reconcile on start: adopt what is
already running (verified by the backend), re-register it in HAProxy, and
replace what died while no controller was watching.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from skylift.backends.base import BackendError, Refreshable
from skylift.config import LoadedConfig
from skylift.controller.apply import ApplyHooks, stop_orphans
from skylift.controller.autoscaler import Autoscaler, reason_label
from skylift.controller.budget import ceiling_of
from skylift.controller.fence import Fence
from skylift.controller.history import HistoryKeeper
from skylift.controller.liveness import Liveness, ReportsWaits
from skylift.controller.pause import explain_pause, manual_clamp, pause_view, restore_pauses
from skylift.controller.protocols import Backend, Balancer, EventSource
from skylift.controller.recorder import ControllerMetrics, Recorder
from skylift.controller.retention import Pruner
from skylift.controller.service import ServiceLoop
from skylift.controller.watch import watch_events
from skylift.controller.writer import StoreWriter
from skylift.metrics import Collector
from skylift.model import Replica, ReplicaState
from skylift.store import Store

log = structlog.get_logger("skylift.controller")

MAX_ERROR_BACKOFF = 30.0
WRITER_CLOSE_TIMEOUT = 10.0
"""Seconds the controller waits at exit for queued store writes to land."""


class UnknownService(KeyError):
    """The API or CLI named a service the config does not have."""


class Controller:
    """Ties config, store, balancer and backends; never decides health itself."""

    def __init__(
        self,
        loaded: LoadedConfig,
        store: Store,
        balancer: Balancer,
        backends: Mapping[str, Backend],
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[Replica], Awaitable[bool]] | None = None,
        collector: Collector | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.store = store
        self.balancer = balancer
        self.metrics = ControllerMetrics()
        # every store write goes through the writer's thread, never the event loop
        self.writer = StoreWriter(store, registry=self.metrics.registry, clock=store.clock)
        self.recorder = Recorder(self.writer, self.metrics)
        self.clock = clock
        self.loops: dict[str, ServiceLoop] = {}
        self.last_tick: dict[str, float] = {}
        self.started = False
        self.running: tuple[asyncio.Event, list[asyncio.Task[None]]] | None = None
        self.hooks = ApplyHooks()  # how `apply` builds backends and follows metrics
        self.backends = backends
        self._probe = probe
        self.collector = collector
        self.ceilings = {
            name: ceiling
            for name, svc in self.config.services.items()
            if (ceiling := ceiling_of(svc)) is not None
        }
        self.autoscalers = {
            name: Autoscaler(name, svc.autoscale, ceiling=self.ceilings.get(name))
            for name, svc in self.config.services.items()
            if svc.autoscale is not None
        }
        self.history = HistoryKeeper(store, self.autoscalers, self.recorder, writer=self.writer)
        self.liveness = self._make_liveness()
        self._unreachable: dict[str, str] = {}  # service -> error of its backend's refresh
        self.fence: Fence | None = None  # the lease every action needs (set by the daemon)
        self.pruner = Pruner(store, self.config.retention, self.metrics, clock)

    # -- start-up ---------------------------------------------------------

    async def start(self) -> None:
        """Adopt what runs, bring HAProxy up with it, create one loop per service."""
        adopted: dict[str, list[Any]] = {}
        for name, spec in self.config.services.items():
            backend = self.backends[name]
            # store and backend calls leave the event loop (the API already serves)
            records = await asyncio.to_thread(self.store.replicas, service=name)
            alive = await asyncio.to_thread(backend.adopt, records)
            alive_ids = {r.id for r in alive}
            for record in records:
                if record.id not in alive_ids:
                    self.writer.delete_replica(record.id)
                    self.recorder.event(
                        "replica_lost",
                        f"{record.id} (pid {record.pid}) is gone since the last controller "
                        "ran; it will be replaced",
                        service=name,
                        level="warning",
                        replica=record.id,
                    )
            adopted[name] = alive
            loop = ServiceLoop(
                name,
                spec,
                backend,
                self.balancer,
                self.writer,
                self.recorder,
                desired=await asyncio.to_thread(self._initial_desired, name),
                clock=self.clock,
                probe=self._probe,
            )
            loop.adopt(alive)
            self.loops[name] = loop
        await self.balancer.start(self.config.services, adopted)
        await asyncio.to_thread(self.history.restore, time.time())
        restore_pauses(self)
        await stop_orphans(self)
        self.started = True

    def _initial_desired(self, name: str) -> int:
        """The count set by `skylift scale` survives restarts unless the config changed."""
        configured = self.config.services[name].replicas
        stored = self.store.desired(name)
        if stored is None or self.store.configured_replicas(name) != configured:
            self.store.set_desired(name, configured, configured=configured)
            stored = configured
        autoscaler = self.autoscalers.get(name)
        if autoscaler is not None:
            return autoscaler.clamp(int(stored))
        ceiling = self.ceilings.get(name)
        return ceiling.cap(int(stored)) if ceiling is not None else int(stored)

    # -- running ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every service until ``stop`` is set; one service's trouble stays its own."""
        tasks: list[asyncio.Task[None]] = []
        self.running = (stop, tasks)  # `apply` adds and ends service tasks through it
        for loop in self.loops.values():
            self.spawn_service(loop)
        if self.collector is not None:
            self.liveness.register("collector")
            tasks.append(asyncio.create_task(self._run_collector(stop), name="collector"))
        tasks.append(asyncio.create_task(self.pruner.run(stop), name="retention"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for loop in self.loops.values():
                await loop.close()
            self.history.flush(time.time(), everything=True)
            await self.flush_writes()

    def spawn_service(self, loop: ServiceLoop) -> list[asyncio.Task[None]]:
        """Start the tasks of one service (its loop, its backend's events) under :meth:`run`."""
        if self.running is None:
            return []  # not running yet: run() starts every loop in self.loops
        stop, tasks = self.running
        dependency = loop.backend if isinstance(loop.backend, ReportsWaits) else None
        self.liveness.register(_beat(loop.name), dependency)
        mine = [asyncio.create_task(self._run_service(loop, stop), name=f"service-{loop.name}")]
        if isinstance(loop.backend, EventSource):
            watcher = watch_events(loop, loop.backend, self.recorder, stop)
            mine.append(asyncio.create_task(watcher, name=f"events-{loop.name}"))
        tasks.extend(mine)
        return mine

    async def _run_service(self, loop: ServiceLoop, stop: asyncio.Event) -> None:
        errors = 0
        last_sentence = ""
        beat = _beat(loop.name)
        while not stop.is_set():
            try:
                if not await self._refresh_backend(loop, stop):
                    continue  # its backend did not answer: this loop waits, others go on
                self._autoscale(loop)
                with self.liveness.waiting(beat, "its reconcile tick"):
                    sentence = await loop.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # throttled with a capped back-off, never swallowed
                self.liveness.failing(beat, "a retry of its failed tick", repr(exc))
                errors += 1
                delay = min(MAX_ERROR_BACKOFF, self.config.interval * 2**errors)
                self.metrics.tick_errors.labels(loop.name).inc()
                log.exception("tick_failed", service=loop.name, retry_in=delay)
                self.recorder.event(
                    "controller_error",
                    f"reconcile tick failed: {exc!r}; retrying in {delay:.1f}s",
                    service=loop.name,
                    level="error",
                )
                await self._sleep(delay, stop)
                continue
            errors = 0
            now = time.time()
            self.last_tick[loop.name] = self.clock()
            self.liveness.ok(beat)
            self._export(loop, now)
            if sentence != last_sentence:
                log.info("tick", service=loop.name, decision=sentence)
                last_sentence = sentence
            await self._sleep(self.config.interval, stop, loop.wake)

    async def _run_collector(self, stop: asyncio.Event) -> None:
        """Poll every metric source each interval; report sources that fail or recover."""
        assert self.collector is not None
        errors = 0
        while not stop.is_set():
            try:
                with self.liveness.waiting("collector", "a pass over the metric sources"):
                    await self.collector.collect(self.clock())
            except Exception as exc:  # a bug in the collector itself: throttled; autoscaling holds
                self.liveness.failing("collector", "a retry of its failed pass", repr(exc))
                errors += 1
                delay = min(MAX_ERROR_BACKOFF, self.config.interval * 2**errors)
                log.exception("collect_failed", retry_in=delay)
                self.recorder.event(
                    "collector_error",
                    f"metrics collection failed: {exc!r}; autoscaling holds; retrying in "
                    f"{delay:.1f}s",
                    level="error",
                )
                await self._sleep(delay, stop)
                continue
            errors = 0
            self.liveness.ok("collector")
            for change in self.collector.transitions():
                if change.bug is not None:  # one (source, service) fails alone; log the bug
                    log.error(
                        "metric_source_bug",
                        source=change.source,
                        service=change.service,
                        exc_info=change.bug,
                    )
                self.recorder.event(
                    f"metrics_source_{change.kind}",
                    change.message,
                    service=change.service,
                    level="warning" if change.kind == "failing" else "info",
                    source=change.source,
                    metrics=list(change.metrics),
                )
            await self._sleep(self.config.interval, stop)

    def _autoscale(self, loop: ServiceLoop) -> None:
        """Ask the engine for this service's count when its interval is due."""
        autoscaler = self.autoscalers.get(loop.name)
        now = self.clock()
        if autoscaler is None or self.collector is None or not autoscaler.due(now):
            return
        obs = self.collector.observations(loop.name, now)
        wall = time.time()
        decision = autoscaler.evaluate(
            obs, loop.desired, loop.count(ReplicaState.READY), now, wall=wall
        )
        self.history.flush(wall)
        reason = reason_label(decision)
        self.metrics.decisions.labels(loop.name, decision.direction, reason).inc()
        self.writer.record_decision(
            loop.name,
            decision.desired,
            decision.direction,
            list(decision.reasons),
            inputs=autoscaler.last_inputs,
        )
        if decision.desired != loop.desired:
            old = loop.desired
            loop.desired = decision.desired
            self.writer.set_desired(loop.name, decision.desired)
            self.recorder.event(
                "autoscaled",
                f"desired replicas {old} -> {decision.desired}: {decision.reasons[0]}",
                service=loop.name,
                old=old,
                new=decision.desired,
                direction=decision.direction,
                reasons=list(decision.reasons),
                inputs=autoscaler.last_inputs,
            )

    def explain(self, service: str) -> dict[str, Any]:
        """Why the service has the count it has (``skylift explain``)."""
        loop = self._loop(service)
        autoscaler = self.autoscalers.get(service)
        now = self.clock()
        if autoscaler is None:
            return {
                "service": service,
                "desired": loop.desired,
                "autoscale": False,
                "reasons": [f"no autoscale policy: desired {loop.desired} is set by config/scale"],
            }
        out = explain_pause(autoscaler.explain(now), autoscaler)
        out["autoscale"] = True
        if self.collector is not None:
            out["failing_sources"] = [
                {"source": h.source, "metrics": list(h.metrics)}
                for h in self.collector.failing()
                if h.service == service
            ]
        return out

    @staticmethod
    async def _sleep(
        seconds: float, stop: asyncio.Event, wake: asyncio.Event | None = None
    ) -> None:
        """Wait ``seconds``, less when stopping or when ``wake`` is set (then cleared)."""
        waits = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            if wake is not None:
                wake.clear()

    def _export(self, loop: ServiceLoop, now: float) -> None:
        m = self.metrics
        m.replicas_desired.labels(loop.name).set(loop.desired)
        m.replicas_ready.labels(loop.name).set(loop.count(ReplicaState.READY))
        m.replicas_starting.labels(loop.name).set(loop.count(ReplicaState.STARTING))
        m.crash_loop.labels(loop.name).set(1 if loop.crash.crash_loop else 0)
        m.last_tick.labels(loop.name).set(now)
        autoscaler = self.autoscalers.get(loop.name)
        if autoscaler is not None and autoscaler.last is not None:
            m.recommended.labels(loop.name).set(autoscaler.last.recommended)
            forecast = autoscaler.forecast_view()
            if forecast is not None:
                m.set_forecast(loop.name, forecast)

    # -- what the API asks --------------------------------------------------

    def live(self) -> bool:
        """Every loop made progress within a few intervals (liveness, not HTTP uptime)."""
        return self.liveness_report()[0]

    def liveness_report(self) -> tuple[bool, dict[str, Any]]:
        """``(live, body)`` for ``/livez``: the body names each stuck loop and why."""
        live, body = self.liveness.check()
        if not self.started:
            body["message"] = "the controller is starting (adopting replicas, starting HAProxy)"
        return live and self.started, body

    def _make_liveness(self) -> Liveness:
        liveness = Liveness(limit=max(10.0, 5 * self.config.interval), clock=self.clock)
        liveness.extra["store writer"] = self._writer_view
        return liveness

    def _writer_view(self, limit: float) -> dict[str, Any]:
        """The writer is stuck when one store call has hung longer than ``limit``
        (a store that refuses fast is an outage it rides out, not a stuck loop)."""
        state = self.writer.state()
        stuck = self.writer.stuck_for() >= limit
        view: dict[str, Any] = {"loop": "store writer", "stuck": stuck, **state}
        if stuck:
            view["seconds_since_progress"] = state["in_flight_seconds"]
            view["waiting_on"] = f"the store ({state['in_flight']})"
        return view

    async def _refresh_backend(self, loop: ServiceLoop, stop: asyncio.Event) -> bool:
        """Let a backend that caches what runs (docker, swarm) re-read it, off the loop
        and with a timeout; False (after waiting an interval) when it did not answer."""
        backend = loop.backend
        if not isinstance(backend, Refreshable):
            return True
        beat = _beat(loop.name)
        try:
            with self.liveness.waiting(beat, backend.dependency()):
                await backend.refresh()
        except BackendError as exc:
            self.liveness.failing(beat, backend.dependency(), str(exc))
            if loop.name not in self._unreachable:
                self.recorder.event(
                    "backend_unreachable",
                    f"{backend.dependency()} does not answer ({exc}); this service's loop "
                    "waits (its replicas keep serving), the other services go on",
                    service=loop.name,
                    level="warning",
                )
            self._unreachable[loop.name] = str(exc)
            await self._sleep(self.config.interval, stop)
            return False
        if self._unreachable.pop(loop.name, None) is not None:
            self.recorder.event(
                "backend_reachable", f"{backend.dependency()} answers again", service=loop.name
            )
        return True

    async def flush_writes(self) -> bool:
        """Wait (in a thread) until queued store writes landed; False after
        ``WRITER_CLOSE_TIMEOUT``."""
        return await asyncio.to_thread(self.writer.flush, WRITER_CLOSE_TIMEOUT)

    async def close(self) -> None:
        """Write what is queued and stop the writer: the very last thing at exit."""
        await asyncio.to_thread(self.writer.close, WRITER_CLOSE_TIMEOUT)

    def scale(self, service: str, replicas: int) -> tuple[int, str | None]:
        """Set the count by hand; returns what was applied and, if less, why."""
        loop = self._loop(service)
        replicas, clamped = manual_clamp(
            replicas, self.autoscalers.get(service), self.ceilings.get(service)
        )
        old = loop.desired
        loop.desired = replicas
        self.writer.set_desired(service, replicas)
        self.recorder.event(
            "scaled",
            f"desired replicas {old} -> {replicas} (manual" + (f"; {clamped})" if clamped else ")"),
            service=service,
            old=old,
            new=replicas,
            clamped=clamped,
        )
        return replicas, clamped

    async def down(self) -> None:
        """Stop every replica (drained) and HAProxy."""
        await asyncio.gather(*(loop.stop_all() for loop in self.loops.values()))
        await stop_orphans(self)
        await self.balancer.stop()
        self.recorder.event("down", "all replicas and HAProxy stopped")

    def _loop(self, service: str) -> ServiceLoop:
        try:
            return self.loops[service]
        except KeyError:
            raise UnknownService(service) from None

    def _autoscale_status(self, name: str, now: float) -> dict[str, Any] | None:
        autoscaler = self.autoscalers.get(name)
        if autoscaler is None:
            return None
        last = autoscaler.last
        return {
            **pause_view(autoscaler),
            "min": autoscaler.policy.min,
            "max": autoscaler.policy.max,
            "last_direction": last.direction if last else None,
            "last_reason": last.reasons[0] if last else None,
            "inputs": autoscaler.last_inputs,
            "next_in": round(max(0.0, autoscaler.next_at - now), 1),
        }

    def status(self) -> dict[str, Any]:
        now = self.clock()
        services: dict[str, Any] = {}
        for name, loop in self.loops.items():
            services[name] = {
                "frontend": self.config.services[name].frontend,
                "desired": loop.desired,
                "ready": loop.count(ReplicaState.READY),
                "state": loop.state,
                "crash": loop.crash.as_dict(now),
                "autoscale": self._autoscale_status(name, now),
                "replicas": [
                    {
                        "id": r.id,
                        "pid": r.pid,
                        "address": r.address,
                        "state": r.state.value,
                        "held": r.state == ReplicaState.HELD,
                        # swarm: the Swarm node id the task runs on
                        **({"node": r.handle["node"]} if "node" in r.handle else {}),
                    }
                    for r in sorted(loop.replicas(), key=lambda r: r.id)
                ],
            }
        return {"services": services, "controller": {"live": self.live(), **self.lease_status()}}

    def lease_status(self) -> dict[str, Any]:
        """Role, epoch and holder of the controller lease, when this controller is fenced."""
        return self.fence.status() if self.fence is not None else {}


def _beat(service: str) -> str:
    """The liveness name of a service's loop."""
    return f"service loop {service!r}"
