"""The reconcile loop of one service: keep ``desired`` replicas healthy.

Each tick observes (process alive? HAProxy says up/down?), then acts: replace
what died or failed its checks, start what is missing (with crash-loop
back-off), drain and stop what is surplus. Slow work (drains) runs in tasks
of its own so one tick never waits on a draining replica.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from skylift.config import Service
from skylift.controller.crash import CrashTracker
from skylift.controller.protocols import Backend, BackendEvent, Balancer, ReplicaRecords
from skylift.controller.recorder import Recorder
from skylift.model import Replica, ReplicaState

log = structlog.get_logger("skylift.controller")

MIN_HEALTHY_UPTIME = 10.0
"""A replica that dies sooner after becoming ready counts as a crash (back-off)."""


@dataclass(slots=True)
class Tracked:
    """A replica plus what only the running controller knows about it."""

    replica: Replica
    since: float  # loop clock when it entered its current state
    in_balancer: bool = False
    ready_at: float | None = None
    retiring: bool = False  # being taken out and stopped: ticks leave it alone


class ServiceLoop:
    """Owns one service's replicas; other services never wait on it."""

    def __init__(
        self,
        name: str,
        spec: Service,
        backend: Backend,
        balancer: Balancer,
        store: ReplicaRecords,
        recorder: Recorder,
        desired: int,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[Replica], Awaitable[bool]] | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.backend = backend
        self.balancer = balancer
        self.store = store
        self.recorder = recorder
        self.desired = desired
        self.clock = clock
        self.crash = CrashTracker(spec.restart)
        self.tracked: dict[str, Tracked] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(timeout=spec.health.timeout, trust_env=False)
        self._probe = probe or self._answers_health
        self.balancer_ok = True
        self.wake = asyncio.Event()  # set when something needs a tick before the next interval
        self._reported: dict[str, str] = {}  # replica id -> what the backend's events said

    # -- views -------------------------------------------------------------

    def replicas(self) -> list[Replica]:
        return [t.replica for t in self.tracked.values()]

    def count(self, *states: ReplicaState) -> int:
        return sum(1 for t in self.tracked.values() if t.replica.state in states)

    @property
    def state(self) -> str:
        if self.crash.crash_loop:
            return "crash-loop"
        if self.count(ReplicaState.READY) >= self.desired:
            return "ok"
        return "scaling" if self.crash.failures == 0 else "restarting"

    # -- life cycle ---------------------------------------------------------

    def adopt(self, replicas: list[Replica]) -> None:
        """Take over replicas a previous controller started (already verified by the backend)."""
        now = self.clock()
        for replica in replicas:
            tracked = Tracked(replica, since=now, in_balancer=True)
            if replica.state == ReplicaState.READY:
                tracked.ready_at = now
            if replica.state in (ReplicaState.DRAINING, ReplicaState.UNHEALTHY):
                replica.state = ReplicaState.READY  # re-evaluated below; drains restart
            self.tracked[replica.id] = tracked
        if replicas:
            self.recorder.event(
                "replicas_adopted",
                f"adopted {len(replicas)} running replica(s)",
                service=self.name,
                replicas=[r.id for r in replicas],
                pids=[r.pid for r in replicas],
            )

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._http.aclose()

    async def stop_all(self) -> None:
        """Drain and stop every replica (``skylift down``)."""
        self.desired = 0
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await asyncio.gather(
            *(
                self._retire(t, "shutdown", drain=True)
                for t in list(self.tracked.values())
                if t.replica.state != ReplicaState.STOPPED
            ),
            return_exceptions=True,
        )

    def on_backend_event(self, event: BackendEvent) -> None:
        """A replica died or its own HEALTHCHECK failed: act now, not at the next poll."""
        tracked = self.tracked.get(event.replica_id)
        if tracked is None or event.kind not in ("died", "unhealthy"):
            return
        if tracked.retiring or tracked.replica.state == ReplicaState.STOPPED:
            return  # being stopped by us (or already handled): its death is expected
        self._reported[event.replica_id] = event.kind
        self.wake.set()

    # -- the tick ---------------------------------------------------------

    async def tick(self) -> str:
        """One observe -> act pass; returns a sentence saying what it did and why."""
        now = self.clock()
        notes: list[str] = []
        statuses = await self._balancer_status()
        for tracked in list(self.tracked.values()):
            note = await self._check(tracked, statuses, now)
            if note:
                notes.append(note)
        notes.extend(await self._converge(now))
        ready = self.count(ReplicaState.READY)
        summary = f"{self.name}: {ready}/{self.desired} ready"
        return summary + ("; " + "; ".join(notes) if notes else "")

    async def _balancer_status(self) -> Mapping[str, Any] | None:
        try:
            statuses = await self.balancer.status(self.name)
        except Exception as exc:  # HAProxy unreachable: keep replicas, decide nothing on health
            if self.balancer_ok:
                self.recorder.event(
                    "balancer_unreachable",
                    f"cannot read HAProxy status ({exc}); health decisions paused until it "
                    "answers again",
                    service=self.name,
                    level="warning",
                )
            self.balancer_ok = False
            return None
        if not self.balancer_ok:
            self.recorder.event("balancer_reachable", "HAProxy answers again", service=self.name)
        self.balancer_ok = True
        return statuses

    async def _check(
        self, tracked: Tracked, statuses: Mapping[str, Any] | None, now: float
    ) -> str | None:
        replica = tracked.replica
        if tracked.retiring or replica.state in (ReplicaState.DRAINING, ReplicaState.STOPPED):
            return None  # its exit is ours (or already handled): never counted twice
        if not self.backend.is_alive(replica):
            return self._on_exit(tracked, now)
        server = statuses.get(replica.id) if statuses is not None else None
        if replica.state == ReplicaState.STARTING:
            return await self._check_starting(tracked, server, statuses is not None, now)
        if replica.state == ReplicaState.READY and server is not None and server.is_down:
            replica.state = ReplicaState.UNHEALTHY
            self.recorder.metrics.replica_failures.labels(self.name, "health_check").inc()
            self.recorder.event(
                "replica_unhealthy",
                f"{replica.id} failed {self.spec.health.fall} health checks on "
                f"{self.spec.health.path}: rotating it out and replacing it",
                service=self.name,
                level="warning",
                replica=replica.id,
            )
            self._spawn_retire(tracked, "unhealthy", drain=False)
            return f"rotating out unhealthy {replica.id}"
        if replica.state == ReplicaState.READY and statuses is not None and server is None:
            await self.balancer.add(self.name, replica)  # lost by HAProxy (restart): re-add
            return f"re-registered {replica.id} in HAProxy"
        return None

    def _on_exit(self, tracked: Tracked, now: float) -> str:
        replica = tracked.replica
        code = self.backend.exit_code(replica)
        was = replica.state
        replica.state = ReplicaState.UNHEALTHY
        crashed = was == ReplicaState.STARTING or (
            tracked.ready_at is not None and now - tracked.ready_at < MIN_HEALTHY_UPTIME
        )
        reported = self._reported.pop(replica.id, None)
        if reported == "unhealthy":
            reason = "reported unhealthy by its own HEALTHCHECK"
        else:
            reason = f"exited with code {code}" if code is not None else "exited"
        detected_by = "backend_events" if reported else "poll"
        self.recorder.metrics.replica_failures.labels(self.name, "exited").inc()
        if crashed:
            delay = self.crash.record_failure(now, f"{replica.id} {reason} during start-up")
            self.recorder.event(
                "replica_crashed",
                f"{replica.id} {reason} while {was.value}; next start in {delay:.1f}s "
                f"({self.crash.failures} failure(s) in a row; see its log)",
                service=self.name,
                level="error" if self.crash.crash_loop else "warning",
                replica=replica.id,
                exit_code=code,
                backoff_seconds=delay,
                detected_by=detected_by,
            )
        else:
            self.recorder.event(
                "replica_exited",
                f"{replica.id} (pid {replica.pid}) {reason}: replacing it",
                service=self.name,
                level="warning",
                replica=replica.id,
                exit_code=code,
                detected_by=detected_by,
            )
        self._spawn_retire(tracked, "exited", drain=False)
        return f"{replica.id} {reason}"

    async def _check_starting(
        self, tracked: Tracked, server: Any, balancer_ok: bool, now: float
    ) -> str | None:
        replica = tracked.replica
        if not tracked.in_balancer:
            if await self._probe(replica):
                await self.balancer.add(self.name, replica)
                tracked.in_balancer = True
                return f"{replica.id} answers its health check; added to HAProxy"
        elif server is not None and server.is_up:
            replica.state = ReplicaState.READY
            tracked.ready_at = now
            self.crash.record_success()
            self._persist(replica)
            self.recorder.event(
                "replica_ready",
                f"{replica.id} is serving ({now - tracked.since:.1f}s after start)",
                service=self.name,
                replica=replica.id,
                seconds_to_ready=round(now - tracked.since, 3),
            )
            return f"{replica.id} ready"
        if balancer_ok and now - tracked.since > self.spec.start_timeout:
            replica.state = ReplicaState.UNHEALTHY
            delay = self.crash.record_failure(now, f"{replica.id} not healthy in time")
            self.recorder.metrics.replica_failures.labels(self.name, "start_timeout").inc()
            self.recorder.event(
                "replica_start_timeout",
                f"{replica.id} not healthy after {self.spec.start_timeout:.0f}s on "
                f"{self.spec.health.path}; stopping it, next start in {delay:.1f}s",
                service=self.name,
                level="warning",
                replica=replica.id,
            )
            self._spawn_retire(tracked, "start_timeout", drain=False)
            return f"{replica.id} start timed out"
        return None

    async def _answers_health(self, replica: Replica) -> bool:
        url = f"http://{replica.address}{self.spec.health.path}"
        try:
            response = await self._http.get(url)
        except httpx.HTTPError:
            return False
        return response.status_code < 400

    async def _converge(self, now: float) -> list[str]:
        active = [
            t
            for t in self.tracked.values()
            if t.replica.state in (ReplicaState.STARTING, ReplicaState.READY)
        ]
        notes: list[str] = []
        missing = self.desired - len(active)
        if missing > 0 and self.crash.may_start(now):
            # While crashing, try one at a time so a bad release costs one process, not N.
            for _ in range(1 if self.crash.failures else missing):
                notes.append(await self._start_one(now))
        elif missing < 0:
            for tracked in self._pick_surplus(active, -missing):
                tracked.replica.state = ReplicaState.DRAINING
                self._persist(tracked.replica)
                self._spawn_retire(tracked, "scale_in", drain=True)
                notes.append(f"draining {tracked.replica.id} (scale in)")
        return notes

    @staticmethod
    def _pick_surplus(active: list[Tracked], count: int) -> list[Tracked]:
        """Not-yet-ready replicas first, then the youngest: the cheapest to lose."""
        order = sorted(
            active,
            key=lambda t: (t.replica.state == ReplicaState.READY, -t.since),
        )
        return order[:count]

    async def _start_one(self, now: float) -> str:
        replica_id = f"{self.name}-{secrets.token_hex(3)}"
        try:
            replica = await self.backend.start(self.name, replica_id)
        except Exception as exc:  # e.g. no free port, command not found: back off, keep others
            delay = self.crash.record_failure(now, f"cannot start: {exc}")
            self.recorder.event(
                "replica_start_failed",
                f"cannot start a replica: {exc}; next try in {delay:.1f}s",
                service=self.name,
                level="error",
                backoff_seconds=delay,
            )
            return f"start failed: {exc}"
        self.tracked[replica.id] = Tracked(replica, since=now)
        self._persist(replica)
        self.recorder.metrics.replica_starts.labels(self.name).inc()
        self.recorder.event(
            "replica_started",
            f"started {replica.id} (pid {replica.pid}) on {replica.address}",
            service=self.name,
            replica=replica.id,
            pid=replica.pid,
            address=replica.address,
        )
        return f"started {replica.id}"

    # -- retiring -----------------------------------------------------------

    def _spawn_retire(self, tracked: Tracked, reason: str, *, drain: bool) -> None:
        tracked.retiring = True
        task = asyncio.create_task(self._retire(tracked, reason, drain=drain))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, tracked: Tracked, reason: str, *, drain: bool) -> None:
        """Drain (optional), take out of HAProxy, stop the process, forget it."""
        replica = tracked.replica
        if tracked.in_balancer:
            if drain:
                replica.state = ReplicaState.DRAINING
                await self.balancer.drain(self.name, replica.id)
                await self._wait_drained(replica)
            await self.balancer.remove(self.name, replica.id)
            tracked.in_balancer = False
        code = await self.backend.stop(replica, self.spec.stop_grace)
        replica.state = ReplicaState.STOPPED
        self.tracked.pop(replica.id, None)
        self._reported.pop(replica.id, None)
        self.store.delete_replica(replica.id)
        self.recorder.event(
            "replica_stopped",
            f"{replica.id} stopped ({reason})",
            service=self.name,
            replica=replica.id,
            reason=reason,
            exit_code=code,
        )

    async def _wait_drained(self, replica: Replica) -> None:
        deadline = self.clock() + self.spec.drain_timeout
        while self.clock() < deadline:
            try:
                server = (await self.balancer.status(self.name)).get(replica.id)
            except Exception:  # HAProxy unreachable: keep waiting until the deadline
                server = None
            if server is None or server.sessions == 0:
                return
            await asyncio.sleep(0.2)
        self.recorder.event(
            "drain_timeout",
            f"{replica.id} still had sessions after {self.spec.drain_timeout:.0f}s; stopping it",
            service=self.name,
            level="warning",
            replica=replica.id,
        )

    def _persist(self, replica: Replica) -> None:
        self.store.upsert_replica(replica)
