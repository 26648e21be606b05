"""The reconcile loop of one service: keep ``desired`` replicas healthy.

Level-triggered: each tick compares three views of the service (the replicas
this loop tracks and records in the store, what HAProxy reports for the
service's backend, and, for backends that can list them, what the backend
runs) and takes the next idempotent step for each replica of the persisted
state machine in :class:`~skylift.model.ReplicaState`::

    starting -> ready [<-> held] -> draining -> removed -> stopping -> gone
    (a failed replica: unhealthy -> removed -> stopping -> gone)

A step that fails (HAProxy's socket gone mid-drain, a stop that raises) is
recorded as a ``replica_retire_failed`` event and retried on the next tick;
nothing is skipped forever. Drift is repaired: a HAProxy server no replica
explains is drained and deleted, a backend replica with no record is stopped,
a ready replica HAProxy holds in DRAIN/MAINT without skylift asking is made
ready again, and a held replica is kept in MAINT. Slow work (drains) runs in
tasks of its own so one tick never waits on a draining replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from skylift.config import Service
from skylift.controller.crash import CrashTracker
from skylift.controller.protocols import (
    Backend,
    BackendEvent,
    Balancer,
    LosesNodes,
    ReplicaFinder,
    ReplicaRecords,
)
from skylift.controller.recorder import Recorder
from skylift.model import Replica, ReplicaState

log = structlog.get_logger("skylift.controller")

MIN_HEALTHY_UPTIME = 10.0
"""A replica that dies sooner after becoming ready counts as a crash (back-off)."""

STRAY_SCAN_INTERVAL = 10.0
"""Seconds between two listings of the backend's replicas (a Docker API call)."""

STRAY_SCAN_TIMEOUT = 30.0
"""A backend listing that takes longer is abandoned for this tick."""

REVIVE_INTERVAL = 1.0
"""Seconds between two attempts to restart a dead HAProxy (by each service loop)."""

OUT_OF_ROTATION = frozenset({"drain", "maint"})
"""HAProxy server states that take no new requests (see :class:`skylift.lb.stats.ServerState`)."""


class UnknownReplica(KeyError):
    """The API or CLI named a replica this service does not have."""


class NotHoldable(ValueError):
    """The replica is on its way out (or not yet in rotation): hold/release makes no sense."""


@dataclass(slots=True)
class Tracked:
    """A replica plus what only the running controller knows about it."""

    replica: Replica
    since: float  # loop clock when it entered its current state
    in_balancer: bool = False
    ready_at: float | None = None
    retire_reason: str | None = None  # set once it is on its way out: ticks only advance that
    drain: bool = False  # drain before removing (scale in, shutdown) or not (it failed)
    drain_deadline: float | None = None  # when a drain is cut short; kept across retries
    task: asyncio.Task[None] | None = None  # the retire step running now, if any
    failures: int = 0  # retire attempts that raised, for the event and back-off of noise
    last_error: str = ""  # the last failed step and its error, so a repeat is not re-said

    @property
    def retiring(self) -> bool:
        return self.retire_reason is not None


def _state_of(server: Any) -> str:
    """HAProxy's folded state of a server as a lower-case word (``up``, ``maint`` ...)."""
    return str(getattr(server, "state", "")).lower()


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
        self._strays: dict[str, asyncio.Task[None]] = {}  # HAProxy server name -> removal
        self._next_scan = 0.0
        self._next_revive = 0.0
        self._gone: set[str] = set()  # stopped since this tick read HAProxy: not strays
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
        """Take over replicas a previous controller started (already verified by the backend).

        Each resumes from its recorded state: a replica recorded on its way out
        (draining, removed, stopping) is finished, not put back in rotation; a
        held one stays held.
        """
        now = self.clock()
        for replica in replicas:
            tracked = Tracked(replica, since=now, in_balancer=True)
            if replica.state in (ReplicaState.READY, ReplicaState.HELD):
                tracked.ready_at = now
            elif replica.state.retiring:
                tracked.retire_reason = "resumed"
                tracked.drain = replica.state == ReplicaState.DRAINING
                tracked.in_balancer = replica.state in (
                    ReplicaState.DRAINING,
                    ReplicaState.UNHEALTHY,
                )
            self.tracked[replica.id] = tracked
        if replicas:
            self.recorder.event(
                "replicas_adopted",
                f"adopted {len(replicas)} running replica(s)",
                service=self.name,
                replicas=[r.id for r in replicas],
                pids=[r.pid for r in replicas],
                states=[r.state.value for r in replicas],
            )

    async def close(self) -> None:
        tasks = [*self._retiring, *self._strays.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()

    async def stop_all(self) -> None:
        """Drain and stop every replica (``skylift down``), retrying failed steps until done.

        Gives up after a drain, a stop and a minute of retries, leaving what could
        not be stopped recorded (in its state) for the next controller to finish.
        """
        self.desired = 0
        limit = self.spec.drain_timeout + self.spec.stop_grace + 60.0
        for tracked in list(self.tracked.values()):
            if not tracked.retiring:
                self._mark_retiring(tracked, "shutdown", drain=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while self.tracked:
                    for tracked in list(self.tracked.values()):
                        if tracked.task is None:
                            self._spawn_retire(tracked)
                    pending = [t.task for t in self.tracked.values() if t.task is not None]
                    await asyncio.gather(*pending, return_exceptions=True)
                    if self.tracked:
                        await asyncio.sleep(0.2)  # a step failed: retry as a tick would
        if self.tracked:
            self.recorder.event(
                "shutdown_incomplete",
                f"could not stop {sorted(self.tracked)} within {limit:.0f}s; they stay "
                "recorded and the next controller finishes them",
                service=self.name,
                level="error",
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

    # -- operator's intent ---------------------------------------------------

    async def hold(self, replica_id: str) -> Replica:
        """Take a replica out of rotation (MAINT) until :meth:`release`; persisted.

        The held replica keeps running but no longer counts towards ``desired``,
        so the next tick starts a replacement and capacity holds. If HAProxy
        cannot be told now, the tick keeps trying (the hold is recorded first).
        """
        tracked = self._holdable(replica_id)
        replica = tracked.replica
        if replica.state == ReplicaState.HELD:
            return replica
        replica.state = ReplicaState.HELD
        self._persist(replica)
        self.recorder.event(
            "replica_held",
            f"{replica.id} held out of rotation by an operator (MAINT); a replacement "
            "keeps capacity",
            service=self.name,
            replica=replica.id,
        )
        await self._try_balancer("hold", replica)
        self.wake.set()
        return replica

    async def release(self, replica_id: str) -> Replica:
        """Put a held replica back in rotation; the surplus (its younger replacement) goes."""
        tracked = self._holdable(replica_id)
        replica = tracked.replica
        if replica.state != ReplicaState.HELD:
            return replica
        replica.state = ReplicaState.READY  # `since` kept: the replacement is the younger surplus
        self._persist(replica)
        self.recorder.event(
            "replica_released",
            f"{replica.id} released by an operator: back in rotation",
            service=self.name,
            replica=replica.id,
        )
        await self._try_balancer("ready", replica)
        self.wake.set()
        return replica

    def _holdable(self, replica_id: str) -> Tracked:
        tracked = self.tracked.get(replica_id)
        if tracked is None:
            raise UnknownReplica(replica_id)
        if tracked.retiring or tracked.replica.state not in (
            ReplicaState.READY,
            ReplicaState.HELD,
        ):
            raise NotHoldable(
                f"{replica_id} is {tracked.replica.state.value}: only a ready replica can be "
                "held (and only a held one released)"
            )
        return tracked

    async def _try_balancer(self, verb: str, replica: Replica) -> bool:
        """Ask HAProxy for ``hold``/``ready``; a failure is an event, and the tick retries."""
        try:
            if verb == "hold":
                await self.balancer.hold(self.name, replica.id)
            else:
                await self.balancer.ready(self.name, replica.id)
        except Exception as exc:  # socket gone: the next tick sees the drift and retries
            self.recorder.event(
                "balancer_step_failed",
                f"cannot set {replica.id} {'maint' if verb == 'hold' else 'ready'} in HAProxy "
                f"({exc}); retrying next tick",
                service=self.name,
                level="warning",
                replica=replica.id,
                step=verb,
                error=str(exc),
            )
            return False
        return True

    # -- the tick ---------------------------------------------------------

    async def tick(self) -> str:
        """One observe -> act pass; returns a sentence saying what it did and why."""
        now = self.clock()
        notes: list[str] = []
        self._gone.clear()  # from here on, what we stop is not a stray of this tick's view
        statuses = await self._balancer_status()
        for tracked in list(self.tracked.values()):
            note = await self._check(tracked, statuses, now)
            if note:
                notes.append(note)
        notes.extend(await self._converge(now))
        notes.extend(self._advance_retiring(statuses))
        if statuses is not None:
            notes.extend(self._remove_stray_servers(statuses))
        notes.extend(await self._stop_stray_replicas(now))
        ready = self.count(ReplicaState.READY)
        summary = f"{self.name}: {ready}/{self.desired} ready"
        held = self.count(ReplicaState.HELD)
        if held:
            summary += f", {held} held"
        return summary + ("; " + "; ".join(notes) if notes else "")

    async def _balancer_status(self) -> Mapping[str, Any] | None:
        try:
            statuses = await self.balancer.status(self.name)
        except Exception as exc:  # HAProxy unreachable: keep replicas, decide nothing on health
            if await self._revive_balancer(exc):
                return await self._balancer_status()
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

    async def _revive_balancer(self, cause: Exception) -> bool:
        """HAProxy died (master killed, OOM): start it again with every known member."""
        now = self.clock()
        if now < self._next_revive:
            return False
        self._next_revive = now + REVIVE_INTERVAL
        try:
            revived = await self.balancer.revive()
        except Exception as exc:  # cannot start it: said once per try, tried again later
            self.recorder.event(
                "balancer_revive_failed",
                f"HAProxy is down ({cause}) and could not be started again: {exc}",
                service=self.name,
                level="error",
                error=str(exc),
            )
            return False
        if revived:
            self.recorder.event(
                "balancer_revived",
                f"HAProxy was not running ({cause}); started it again with the known replicas",
                service=self.name,
                level="warning",
            )
        return revived

    async def _check(
        self, tracked: Tracked, statuses: Mapping[str, Any] | None, now: float
    ) -> str | None:
        replica = tracked.replica
        if tracked.retiring or replica.state.retiring:
            return None  # its exit is ours (or already handled): never counted twice
        if not self.backend.is_alive(replica):
            return self._on_exit(tracked, now)
        server = statuses.get(replica.id) if statuses is not None else None
        if replica.state == ReplicaState.STARTING:
            return await self._check_starting(tracked, server, statuses is not None, now)
        if replica.state == ReplicaState.HELD:
            return await self._keep_held(tracked, server, statuses is not None)
        if replica.state == ReplicaState.READY and server is not None and server.is_down:
            self.recorder.metrics.replica_failures.labels(self.name, "health_check").inc()
            self.recorder.event(
                "replica_unhealthy",
                f"{replica.id} failed {self.spec.health.fall} health checks on "
                f"{self.spec.health.path}: rotating it out and replacing it",
                service=self.name,
                level="warning",
                replica=replica.id,
            )
            self._retire(tracked, "unhealthy", drain=False, state=ReplicaState.UNHEALTHY)
            return f"rotating out unhealthy {replica.id}"
        if replica.state == ReplicaState.READY and statuses is not None and server is None:
            await self.balancer.add(self.name, replica)  # lost by HAProxy (restart): re-add
            tracked.in_balancer = True
            self.recorder.event(
                "replica_reregistered",
                f"{replica.id} was missing from HAProxy; added it back",
                service=self.name,
                level="warning",
                replica=replica.id,
            )
            return f"re-registered {replica.id} in HAProxy"
        if replica.state == ReplicaState.READY and (found := _state_of(server)) in OUT_OF_ROTATION:
            # Nobody in skylift asked for this (our drains set DRAINING first): drift.
            await self.balancer.ready(self.name, replica.id)
            self.recorder.event(
                "replica_restored",
                f"{replica.id} was in {found.upper()} in HAProxy although skylift "
                "did not ask for it; put it back in rotation (use `skylift replica hold` to "
                "keep a replica out)",
                service=self.name,
                level="warning",
                replica=replica.id,
                haproxy_state=found,
            )
            return f"restored {replica.id} to rotation"
        return None

    async def _keep_held(self, tracked: Tracked, server: Any, balancer_ok: bool) -> str | None:
        """A held replica stays in MAINT whatever happened to HAProxy meanwhile."""
        replica = tracked.replica
        if not balancer_ok or _state_of(server) == "maint":
            return None
        if server is None:
            await self.balancer.add(self.name, replica)
            tracked.in_balancer = True
        await self.balancer.hold(self.name, replica.id)
        return f"{replica.id} held: set MAINT in HAProxy"

    def _on_exit(self, tracked: Tracked, now: float) -> str:
        replica = tracked.replica
        code = self.backend.exit_code(replica)
        was = replica.state
        replica.state = ReplicaState.UNHEALTHY
        # gone with its node (down or drained): not the replica's fault, no crash backoff
        node_lost = isinstance(self.backend, LosesNodes) and self.backend.lost_node(replica)
        crashed = not node_lost and (
            was == ReplicaState.STARTING
            or (tracked.ready_at is not None and now - tracked.ready_at < MIN_HEALTHY_UPTIME)
        )
        reported = self._reported.pop(replica.id, None)
        if reported == "unhealthy":
            reason = "reported unhealthy by its own HEALTHCHECK"
        elif node_lost:
            reason = f"lost with its node {replica.handle.get('node', '?')} (down or drained)"
        else:
            reason = f"exited with code {code}" if code is not None else "exited"
        detected_by = "backend_events" if reported else "poll"
        failure = "node_lost" if node_lost else "exited"
        self.recorder.metrics.replica_failures.labels(self.name, failure).inc()
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
        self._retire(tracked, "exited", drain=False)
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
            self._retire(tracked, "start_timeout", drain=False)
            return f"{replica.id} start timed out"
        return None

    async def _answers_health(self, replica: Replica) -> bool:
        url = f"http://{replica.address}{self.spec.health.path}"
        try:
            response = await self._http.get(url)
        except httpx.HTTPError:
            return False
        return self.spec.health.accepts(response.status_code)

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
                self._retire(tracked, "scale_in", drain=True, state=ReplicaState.DRAINING)
                notes.append(f"draining {tracked.replica.id} (scale in)")
        return notes

    @staticmethod
    def _pick_surplus(active: list[Tracked], count: int) -> list[Tracked]:
        """Not-yet-ready replicas first, then the youngest: the cheapest to lose."""
        order = sorted(
            active,
            # started_at breaks the tie between replicas adopted at the same moment
            key=lambda t: (
                t.replica.state == ReplicaState.READY,
                -t.since,
                -(t.replica.started_at or 0.0),
            ),
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

    # -- retiring: draining -> removed -> stopping -> gone ---------------------

    def _mark_retiring(
        self, tracked: Tracked, reason: str, *, drain: bool, state: ReplicaState | None = None
    ) -> None:
        replica = tracked.replica
        tracked.retire_reason = reason
        tracked.drain = drain and tracked.in_balancer
        if state is not None:
            replica.state = state
        elif not replica.state.retiring:
            replica.state = ReplicaState.DRAINING if tracked.drain else ReplicaState.UNHEALTHY
        self._persist(replica)

    def _retire(
        self, tracked: Tracked, reason: str, *, drain: bool, state: ReplicaState | None = None
    ) -> None:
        """Decide that a replica goes (persisted), and take its first step now."""
        self._mark_retiring(tracked, reason, drain=drain, state=state)
        self._spawn_retire(tracked)

    def _spawn_retire(self, tracked: Tracked) -> None:
        task = asyncio.create_task(self._retire_steps(tracked))
        tracked.task = task
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _advance_retiring(self, statuses: Mapping[str, Any] | None) -> list[str]:
        """Level-triggered: every replica on its way out with no step running gets its next one."""
        notes = []
        for tracked in list(self.tracked.values()):
            if not tracked.retiring or tracked.task is not None:
                continue
            if statuses is not None and tracked.replica.id not in statuses:
                tracked.in_balancer = False  # HAProxy does not have it: nothing to drain
            self._spawn_retire(tracked)
            notes.append(f"retrying the retirement of {tracked.replica.id}")
        return notes

    async def _retire_steps(self, tracked: Tracked) -> None:
        """Drain (optional), take out of HAProxy, stop the process, forget it.

        Each step is idempotent and starts from the replica's recorded state, so
        a retry after a failure (or a restarted controller) resumes where it
        stopped. A failure ends this attempt with an event; the next tick
        starts the next one.
        """
        replica = tracked.replica
        reason = tracked.retire_reason or "retire"
        step = "drain"
        try:
            if replica.state in (ReplicaState.DRAINING, ReplicaState.UNHEALTHY):
                if tracked.drain and tracked.in_balancer:
                    if tracked.drain_deadline is None:
                        tracked.drain_deadline = self.clock() + self.spec.drain_timeout
                    await self.balancer.drain(self.name, replica.id)
                    if self.clock() < tracked.drain_deadline:  # a retry past it: remove now
                        await self._wait_drained(replica, tracked.drain_deadline)
                step = "remove"
                await self.balancer.remove(self.name, replica.id)
                tracked.in_balancer = False
                replica.state = ReplicaState.REMOVED
                self._persist(replica)
            step = "stop"
            if replica.state != ReplicaState.STOPPING:
                replica.state = ReplicaState.STOPPING
                self._persist(replica)
            code = await self.backend.stop(replica, self.spec.stop_grace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded, and retried by the next tick: never forgotten
            tracked.failures += 1
            log.warning("retire_step_failed", replica=replica.id, step=step, error=str(exc))
            said, tracked.last_error = tracked.last_error, f"{step}: {exc}"
            if said == tracked.last_error and tracked.failures & (tracked.failures - 1):
                return  # the same failure again: said at attempts 1, 2, 4, 8 ... only
            self.recorder.event(
                "replica_retire_failed",
                f"{replica.id}: {step} failed ({exc}); retrying next tick "
                f"(attempt {tracked.failures})",
                service=self.name,
                level="warning",
                replica=replica.id,
                step=step,
                error=str(exc),
                attempt=tracked.failures,
                reason=reason,
            )
            return
        finally:
            tracked.task = None
        replica.state = ReplicaState.STOPPED
        self._gone.add(replica.id)
        self.tracked.pop(replica.id, None)
        self._reported.pop(replica.id, None)
        self.store.delete_replica(replica.id)
        self.recorder.event(
            "replica_stopped",
            f"{replica.id} stopped ({reason})"
            + (f" after {tracked.failures} failed attempt(s)" if tracked.failures else ""),
            service=self.name,
            replica=replica.id,
            reason=reason,
            exit_code=code,
            failed_attempts=tracked.failures,
        )

    async def _wait_drained(self, replica: Replica, deadline: float) -> None:
        """Until its sessions end or ``deadline``; a failing stats read keeps waiting."""
        while self.clock() < deadline:
            try:
                server = (await self.balancer.status(self.name)).get(replica.id)
            except Exception as exc:  # HAProxy unreachable: keep waiting until the deadline
                log.info("drain_status_unavailable", replica=replica.id, error=str(exc))
            else:
                if server is None or server.sessions == 0:
                    return
            await asyncio.sleep(0.2)
        self.recorder.event(
            "drain_timeout",
            f"{replica.id} still had sessions (or HAProxy did not answer) after "
            f"{self.spec.drain_timeout:.0f}s; removing it",
            service=self.name,
            level="warning",
            replica=replica.id,
        )

    # -- strays ------------------------------------------------------------------

    def _remove_stray_servers(self, statuses: Mapping[str, Any]) -> list[str]:
        """A server in this service's backend that no replica explains: drain, then delete."""
        notes = []
        for name, server in statuses.items():
            if name in self.tracked or name in self._strays or name in self._gone:
                continue
            self.recorder.event(
                "haproxy_stray_removed",
                f"HAProxy server {name} ({getattr(server, 'address', '?')}) is no replica of "
                f"{self.name}: draining and deleting it",
                service=self.name,
                level="warning",
                server=name,
                haproxy_state=_state_of(server),
            )
            task = asyncio.create_task(self._remove_stray(name))
            self._strays[name] = task
            notes.append(f"removing stray HAProxy server {name}")
        return notes

    async def _remove_stray(self, name: str) -> None:
        try:
            await self.balancer.drain(self.name, name)
            await self.balancer.remove(self.name, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # still there next tick: seen again, tried again
            self.recorder.event(
                "haproxy_stray_remove_failed",
                f"cannot remove stray HAProxy server {name} ({exc}); retrying next tick",
                service=self.name,
                level="warning",
                server=name,
                error=str(exc),
            )
        finally:
            self._strays.pop(name, None)

    async def _stop_stray_replicas(self, now: float) -> list[str]:
        """Replicas the backend runs for this service that no record explains are stopped.

        Only backends that can list their replicas (Docker, Swarm) take part;
        the listing leaves the event loop (a thread, bounded by a timeout).
        """
        if not isinstance(self.backend, ReplicaFinder) or now < self._next_scan:
            return []
        self._next_scan = now + STRAY_SCAN_INTERVAL
        try:
            found = await asyncio.wait_for(asyncio.to_thread(self.backend.find), STRAY_SCAN_TIMEOUT)
        except Exception as exc:  # the backend cannot list now: look again at the next scan
            log.warning("stray_scan_failed", service=self.name, error=str(exc))
            return []
        notes = []
        for replica in found:
            if replica.service != self.name or replica.id in self.tracked:
                continue
            self.recorder.event(
                "replica_stray_stopped",
                f"{replica.id} runs for {self.name} but no record explains it (started by a "
                "controller that died before recording it?): stopping it",
                service=self.name,
                level="warning",
                replica=replica.id,
            )
            tracked = Tracked(replica, since=now)
            self.tracked[replica.id] = tracked
            self._retire(tracked, "stray", drain=False, state=ReplicaState.UNHEALTHY)
            notes.append(f"stopping stray replica {replica.id}")
        return notes

    def _persist(self, replica: Replica) -> None:
        self.store.upsert_replica(replica)
