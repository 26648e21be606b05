"""Fencing: nothing acts without a valid controller lease, and every action carries its epoch.

The controller is given the backends, the balancer and the store through these
adapters (``fence_controller_parts``). Each mutating call first checks the lease:

- valid by the local monotonic clock (renewed within ``Lease.window``): go on;
- otherwise an async call re-verifies with the store (a renewal, in a thread, with
  a timeout); a sync call (the store's writes) cannot wait and is refused.

A refused call raises :class:`Fenced` and does nothing: the service loop's usual
error handling retries it on a later tick, which a fresh renewal lets through,
or never again once another controller took the lease (then the daemon stops).

Every action is stamped with the epoch: replicas get ``SKYLIFT_EPOCH`` (process)
or the ``skylift.epoch`` label (containers) and ``handle["epoch"]`` in the store,
and every event's data carries ``epoch``.

What fencing cannot do: HAProxy and the OS do not check tokens, so a controller
frozen *between* its check and its call (a few microseconds) could still act
once late. The lease makes that window as small as the code path; the epochs
stamped on actions make any such action visible afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import structlog

from skylift.backends.base import Backend, Stamped
from skylift.config import Service
from skylift.controller.protocols import Balancer, EventSource, EventStream
from skylift.model import Replica
from skylift.store import Store
from skylift.store.lease import Lease, LeaseLost, LeaseUnverified

log = structlog.get_logger("skylift.lease")

VERIFY_TIMEOUT = 5.0
"""Seconds one re-verification (renewal) with the store may take before the call is refused."""


class Fenced(RuntimeError):
    """This controller may not act: its lease is lost or could not be verified."""


class Fence:
    """The one gate every action passes; tells ``on_lost`` callbacks when the lease is gone."""

    def __init__(self, lease: Lease, *, timeout: float = VERIFY_TIMEOUT) -> None:
        self.lease = lease
        self.timeout = timeout
        self.on_lost: list[Callable[[str], None]] = []
        self._told = False
        self.unverified: str | None = None  # why the last renewal failed (store unreachable)
        # a thread of its own: hung calls elsewhere (a frozen dockerd) filling the default
        # executor must not starve the renewal, or every service would stop acting
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")

    @property
    def epoch(self) -> int:
        return self.lease.epoch or 0

    def refusal(self, action: str, why: str) -> Fenced:
        return Fenced(f"refused to {action}: {why}; this controller acts on nothing")

    def check(self, action: str) -> int:
        """Sync gate (no I/O): the epoch if the lease is valid by the local clock."""
        if self.lease.valid():
            return self.epoch
        if self.lease.lost is not None:
            raise self.refusal(action, self.lease.lost)
        raise self.refusal(action, "the controller lease is not renewed (store unreachable?)")

    async def ensure(self, action: str) -> int:
        """Async gate: the local clock, else a renewal with the store."""
        if self.lease.valid():
            return self.epoch
        await self.renew()
        return self.check(action)

    async def renew(self) -> None:
        """Renew in a worker thread; a lost lease is reported once to ``on_lost``."""
        if self.lease.lost is not None:
            self._lost(self.lease.lost)
            return
        try:
            renewal = asyncio.get_running_loop().run_in_executor(self._thread, self.lease.renew)
            await asyncio.wait_for(renewal, self.timeout)
        except LeaseLost as exc:
            self._lost(str(exc))
        except (LeaseUnverified, TimeoutError) as exc:
            why = str(exc) or f"no answer from the store within {self.timeout:.0f}s"
            if self.unverified is None:
                log.warning("controller_lease_unverified", epoch=self.epoch, error=why)
            self.unverified = why
        else:
            if self.unverified is not None:
                log.info("controller_lease_renewed", epoch=self.epoch)
            self.unverified = None

    def _lost(self, reason: str) -> None:
        if self._told:
            return
        self._told = True
        for callback in self.on_lost:
            callback(reason)

    def status(self) -> dict[str, Any]:
        """What ``skylift status`` shows of the lease."""
        current = self.lease.current
        return {
            "role": "active" if self.lease.held else "lost",
            "epoch": self.lease.epoch,
            "lease_valid": self.lease.valid(),
            "lease_seconds": self.lease.duration,
            "holder": self.lease.who,
            "store_epoch": current.epoch if current is not None else None,
        }


async def keep(fence: Fence, every: float, stop: asyncio.Event) -> None:
    """Renew the lease every ``every`` seconds until ``stop`` or until it is lost."""
    while not stop.is_set() and fence.lease.lost is None:
        await fence.renew()
        if fence.lease.lost is not None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


class FencedBackend:
    """A Backend whose start/stop need the lease; replicas started carry the epoch."""

    def __init__(self, inner: Backend, fence: Fence) -> None:
        self.inner = inner
        self.fence = fence

    async def start(self, service: str, replica_id: str) -> Replica:
        epoch = await self.fence.ensure(f"start {replica_id}")
        if isinstance(self.inner, Stamped):
            self.inner.epoch = epoch
        replica = await self.inner.start(service, replica_id)
        replica.handle["epoch"] = str(epoch)
        return replica

    async def stop(self, replica: Replica, grace: float) -> int | None:
        await self.fence.ensure(f"stop {replica.id}")
        return await self.inner.stop(replica, grace)

    def is_alive(self, replica: Replica) -> bool:
        return self.inner.is_alive(replica)

    def exit_code(self, replica: Replica) -> int | None:
        return self.inner.exit_code(replica)

    def adopt(self, records: Sequence[Replica]) -> list[Replica]:
        self.fence.check("adopt replicas")
        return self.inner.adopt(records)

    def log_path(self, replica: Replica) -> Path:
        return self.inner.log_path(replica)

    def __getattr__(self, name: str) -> Any:
        """Read-only extras of the backend (``refresh``, ``find``, ``waits``...) pass through,
        so capability checks (runtime protocols) see what the wrapped backend can do."""
        return getattr(self.inner, name)


class FencedEventBackend(FencedBackend):
    """The same, for a backend that pushes replica deaths (reading them is no action)."""

    async def events(self) -> EventStream:
        return await cast(EventSource, self.inner).events()


def fence_backend(inner: Backend, fence: Fence) -> FencedBackend:
    if isinstance(inner, EventSource):
        return FencedEventBackend(inner, fence)
    return FencedBackend(inner, fence)


def unfenced(backend: Any) -> Any:
    """The backend behind an adapter (for read-only extras such as container stats)."""
    return backend.inner if isinstance(backend, FencedBackend) else backend


class FencedBalancer:
    """A Balancer whose every change to HAProxy needs the lease; reading status does not."""

    def __init__(self, inner: Balancer, fence: Fence) -> None:
        self.inner = inner
        self.fence = fence

    async def start(
        self, services: Mapping[str, Service], replicas: Mapping[str, Sequence[Replica]]
    ) -> None:
        await self.fence.ensure("start HAProxy")
        await self.inner.start(services, replicas)

    async def add(self, service: str, replica: Replica) -> None:
        await self.fence.ensure(f"add {replica.id} to HAProxy")
        await self.inner.add(service, replica)

    async def drain(self, service: str, replica_id: str) -> None:
        await self.fence.ensure(f"drain {replica_id}")
        await self.inner.drain(service, replica_id)

    async def remove(self, service: str, replica_id: str) -> None:
        await self.fence.ensure(f"remove {replica_id} from HAProxy")
        await self.inner.remove(service, replica_id)

    async def status(self, service: str) -> Mapping[str, Any]:
        return await self.inner.status(service)

    async def ready(self, service: str, replica_id: str) -> None:
        await self.fence.ensure(f"put {replica_id} back in rotation")
        await self.inner.ready(service, replica_id)

    async def hold(self, service: str, replica_id: str) -> None:
        await self.fence.ensure(f"hold {replica_id} in MAINT")
        await self.inner.hold(service, replica_id)

    async def revive(self) -> bool:
        await self.fence.ensure("restart HAProxy")
        return await self.inner.revive()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def stop(self) -> None:
        await self.fence.ensure("stop HAProxy")
        await self.inner.stop()


class FencedStore:
    """The store, whose writes need the lease and carry the epoch; reads pass through.

    A proxy rather than a subclass, so whatever else the Store offers (and however its
    writes are carried out) is forwarded unchanged.
    """

    WRITES = frozenset(
        {"set_desired", "set_crash_state", "record_decision", "prune_events", "delete_replica"}
    )

    def __init__(self, inner: Store, fence: Fence) -> None:
        self._inner = inner
        self._fence = fence

    def upsert_replica(self, replica: Replica) -> None:
        epoch = self._fence.check(f"record {replica.id}")
        replica.handle["epoch"] = str(epoch)
        self._inner.upsert_replica(replica)

    def add_event(self, kind: str, message: str, **kwargs: Any) -> Any:
        """Events are words, not actions: refused only once the lease is known lost (a
        store outage must not eat them); until then they carry this controller's epoch,
        so a stale controller's words are told apart from the new one's."""
        if self._fence.lease.lost is not None:
            raise self._fence.refusal(f"record event {kind}", self._fence.lease.lost)
        data = dict(kwargs.pop("data", None) or {})
        data["epoch"] = self._fence.epoch
        return self._inner.add_event(kind, message, data=data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self.WRITES:
            return attr

        def fenced(*args: Any, **kwargs: Any) -> Any:
            self._fence.check(name.replace("_", " "))
            return attr(*args, **kwargs)

        return fenced


def fenced_store(store: Store, fence: Fence) -> Store:
    """The store as the controller sees it: a Store in every way but the fence."""
    return cast(Store, FencedStore(store, fence))
