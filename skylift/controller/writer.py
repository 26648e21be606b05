"""One ordered write-behind writer between the controller and its store.

Why: a store call (SQLite busy, PostgreSQL restarting or unreachable) can take
seconds; made on the event loop it froze every service, the API and
``/livez``. The controller now hands each write to this writer and goes on:
``add_event``, ``upsert_replica``, ``delete_replica``, ``record_decision`` and
``set_desired`` keep their synchronous signatures but only enqueue. One thread
performs the writes in the order they were asked for.

While the store is down, writes wait in memory and are retried (with a capped
back-off) until it answers again:

- replica records and desired counts are never dropped: they are *coalesced*
  per key (one replica id, one service), the latest state wins;
- everything else (events, decisions, history) waits in a bounded queue; when
  it is full the oldest entry is dropped, counted in
  ``skylift_store_writes_dropped_total``, and reported in one event once the
  store answers again.

Timestamps are taken when a write is asked for, not when it lands, so events
written after an outage keep the time they happened.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import exc as sa_exc

from skylift.controller.fence import Fenced
from skylift.model import Replica

log = structlog.get_logger("skylift.controller")

MAX_PENDING = 10_000
"""Droppable writes (events, decisions, history) kept while the store is down."""
RETRY_FIRST = 0.5
RETRY_MAX = 2.0
"""Back-off between attempts while the store fails (seconds, doubling up to this)."""

TRANSIENT: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # server gone, connection refused, SQLite busy/locked
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # connection pool exhausted
    ConnectionError,
    Fenced,  # the lease is not confirmed this moment: wait for its renewal, never skip
    TimeoutError,
)
"""Errors that mean "the store cannot answer now": the write is kept and retried.
Any other error is a bad write (a bug): logged, counted and not retried."""


class WriteTarget(Protocol):
    """The store calls the writer makes (``skylift.store.Store`` has them all)."""

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        data: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> Any: ...

    def upsert_replica(self, replica: Replica) -> None: ...

    def delete_replica(self, replica_id: str) -> Any: ...

    def record_decision(
        self,
        service: str,
        desired: int,
        direction: str,
        reasons: Sequence[str],
        inputs: Mapping[str, Any] | None = None,
        *,
        ts: float | None = None,
    ) -> Any: ...

    def set_desired(self, service: str, n: int, *, configured: int | None = None) -> None: ...


@dataclass(slots=True)
class _Op:
    seq: int
    what: str  # for logs and /livez: "add_event replica_started"
    call: Callable[[], object]
    key: Hashable | None  # None: droppable; else coalesced with later ops of the same key


class WriterMetrics:
    """The writer's own samples, in the controller's registry."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.dropped = Counter(
            "skylift_store_writes_dropped_total",
            "Store writes (events, decisions, history) dropped because the store was "
            "unavailable and the write queue was full (oldest first)",
            registry=registry,
        )
        self.failed = Counter(
            "skylift_store_writes_failed_total",
            "Store writes the store refused for a reason other than being unavailable",
            registry=registry,
        )
        self.pending = Gauge(
            "skylift_store_writes_pending",
            "Store writes waiting to be written",
            registry=registry,
        )
        self.unavailable = Gauge(
            "skylift_store_unavailable",
            "1 while store writes fail because the store cannot be reached",
            registry=registry,
        )


class StoreWriter:
    """Performs store writes in order, in one thread of its own; never blocks the caller."""

    def __init__(
        self,
        store: WriteTarget,
        *,
        registry: CollectorRegistry | None = None,
        max_pending: int = MAX_PENDING,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.store = store
        self.max_pending = max_pending
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = WriterMetrics(registry)
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._droppable: collections.deque[_Op] = collections.deque()
        self._keyed: dict[Hashable, _Op] = {}  # insertion order == seq order (re-set moves)
        self._current: _Op | None = None
        self._current_since: float | None = None  # monotonic
        self._thread: threading.Thread | None = None
        self._closing = False
        self.dropped = 0  # total, since start
        self._dropped_unreported = 0
        self.failing_since: float | None = None  # wall clock of the first failure
        self.last_error: str | None = None
        self._delayed = 0  # writes that waited for the store during the current outage

    # -- the store calls the controller makes --------------------------------------

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        ts = self.clock()
        payload = dict(data) if data else None
        self.submit(
            f"add_event {kind}",
            lambda: self.store.add_event(
                kind, message, service=service, level=level, data=payload, ts=ts
            ),
        )

    def record_decision(
        self,
        service: str,
        desired: int,
        direction: str,
        reasons: Sequence[str],
        inputs: Mapping[str, Any] | None = None,
    ) -> None:
        ts = self.clock()
        reasons, inputs = list(reasons), dict(inputs or {})
        self.submit(
            f"record_decision {service}",
            lambda: self.store.record_decision(
                service, desired, direction, reasons, inputs=inputs, ts=ts
            ),
        )

    def upsert_replica(self, replica: Replica) -> None:
        snapshot = Replica(
            id=replica.id,
            service=replica.service,
            host=replica.host,
            port=replica.port,
            state=replica.state,
            pid=replica.pid,
            started_at=replica.started_at,
            handle=dict(replica.handle),
        )  # the loop mutates its replicas: write the state as it was now
        self.submit(
            f"upsert_replica {replica.id}",
            lambda: self.store.upsert_replica(snapshot),
            key=("replica", replica.id),
        )

    def delete_replica(self, replica_id: str) -> None:
        self.submit(
            f"delete_replica {replica_id}",
            lambda: self.store.delete_replica(replica_id),
            key=("replica", replica_id),
        )

    def set_desired(self, service: str, n: int, *, configured: int | None = None) -> None:
        self.submit(
            f"set_desired {service}",
            lambda: self.store.set_desired(service, n, configured=configured),
            key=("desired", service, configured is not None),
        )

    # -- the queue ----------------------------------------------------------------------

    def submit(self, what: str, call: Callable[[], object], *, key: Hashable | None = None) -> None:
        """Queue ``call``; with a ``key``, it replaces a queued write with the same key
        (latest wins, never dropped); without, it may be dropped (oldest first) while
        the store is down and ``max_pending`` are waiting."""
        with self._cond:
            if self._closing:
                log.error("store_write_after_close", what=what)
                return
            op = _Op(next(self._seq), what, call, key)
            if key is None:
                self._droppable.append(op)
                # the droppable write in flight counts too: it is requeued if it fails
                in_flight = self._current is not None and self._current.key is None
                while self._droppable and len(self._droppable) + in_flight > self.max_pending:
                    lost = self._droppable.popleft()
                    self.dropped += 1
                    self._dropped_unreported += 1
                    self.metrics.dropped.inc()
                    log.warning("store_write_dropped", what=lost.what, dropped=self.dropped)
            else:
                self._keyed.pop(key, None)
                self._keyed[key] = op
            self.metrics.pending.set(self._pending_locked())
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Writes queued or in flight."""
        with self._cond:
            return self._pending_locked()

    def _pending_locked(self) -> int:
        return len(self._droppable) + len(self._keyed) + (self._current is not None)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything asked so far is written; False if ``timeout`` passed first."""
        deadline = None if timeout is None else self.monotonic() + timeout
        with self._cond:
            while self._pending_locked():
                left = None if deadline is None else deadline - self.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop the thread."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closing = True
            lost = self._pending_locked()
            thread = self._thread
            self._cond.notify_all()
        if not flushed:
            log.error(
                "store_writes_lost_at_shutdown",
                pending=lost,
                error=self.last_error,
                message=f"{lost} store write(s) not written: the store did not answer "
                f"within {timeout:g}s",
            )
        if thread is not None:
            thread.join(timeout=1.0)

    # -- what /livez and status show ----------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Pending and dropped counts, the write in flight and since when, the outage."""
        with self._cond:
            now = self.monotonic()
            return {
                "pending": self._pending_locked(),
                "dropped": self.dropped,
                "in_flight": None if self._current is None else self._current.what,
                "in_flight_seconds": (
                    None if self._current_since is None else round(now - self._current_since, 1)
                ),
                "failing_since": self.failing_since,
                "last_error": self.last_error,
            }

    def stuck_for(self) -> float:
        """Seconds the write in flight has been waiting on the store (0 when none)."""
        with self._cond:
            if self._current_since is None:
                return 0.0
            return max(0.0, self.monotonic() - self._current_since)

    # -- the thread ----------------------------------------------------------------------

    def _take_locked(self) -> _Op | None:
        """The oldest queued write (droppable or keyed), removed from the queue."""
        head = self._droppable[0] if self._droppable else None
        first_key = next(iter(self._keyed), None)
        keyed = None if first_key is None else self._keyed[first_key]
        if head is None and keyed is None:
            return None
        if keyed is None or (head is not None and head.seq < keyed.seq):
            return self._droppable.popleft()
        assert first_key is not None
        return self._keyed.pop(first_key)

    def _requeue_locked(self, op: _Op) -> None:
        """Put a failed write back at the front (unless a newer one replaced it)."""
        if op.key is None:
            self._droppable.appendleft(op)  # it was counted in flight: still within the bound
        elif op.key not in self._keyed:
            self._keyed = {op.key: op, **self._keyed}

    def _run(self) -> None:
        delay = self.retry_first
        while True:
            with self._cond:
                op = self._take_locked()
                while op is None:
                    if self._closing:
                        return
                    self._cond.wait()
                    op = self._take_locked()
                self._current, self._current_since = op, self.monotonic()
            try:
                op.call()
            except TRANSIENT as exc:
                self._failed(op, exc)
                with self._cond:
                    self._current = self._current_since = None
                    self._requeue_locked(op)
                    self.metrics.pending.set(self._pending_locked())
                    if not self._closing:
                        self._cond.wait(delay)
                    elif self.failing_since is not None:
                        return  # closing and the store still fails: close() reports the loss
                delay = min(self.retry_max, max(delay * 2, 0.01))
                continue
            except Exception as exc:  # a bad write, not an outage: reported, not retried
                self.metrics.failed.inc()
                log.error("store_write_failed", what=op.what, error=repr(exc))
            else:
                delay = self.retry_first
                if self.failing_since is not None:
                    self._recovered()
            with self._cond:
                self._current = self._current_since = None
                self.metrics.pending.set(self._pending_locked())
                self._cond.notify_all()

    def _failed(self, op: _Op, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if self.failing_since is None:
            self.failing_since = self.clock()
            self._delayed = 0
            self.metrics.unavailable.set(1)
            log.warning(
                "store_unavailable",
                what=op.what,
                error=self.last_error,
                message="store writes wait in memory until the store answers again",
            )
        self._delayed += 1

    def _recovered(self) -> None:
        """The store answers again: say so once, with what the outage cost."""
        assert self.failing_since is not None
        since, self.failing_since = self.failing_since, None
        self.metrics.unavailable.set(0)
        with self._cond:
            dropped, self._dropped_unreported = self._dropped_unreported, 0
            pending = self._pending_locked()
        seconds = max(0.0, self.clock() - since)
        message = (
            f"the store answers again after {seconds:.1f}s unavailable ({self.last_error}); "
            f"{pending} queued write(s) follow"
        )
        if dropped:
            message += (
                f"; {dropped} write(s) (events, decisions, history) were dropped, oldest "
                f"first, because more than {self.max_pending} waited"
            )
        log.info("store_available", seconds=round(seconds, 1), dropped=dropped, pending=pending)
        try:
            self.store.add_event(
                "store_available",
                message,
                level="warning" if dropped else "info",
                data={
                    "unavailable_seconds": round(seconds, 1),
                    "since": since,
                    "dropped": dropped,
                    "dropped_total": self.dropped,
                    "error": self.last_error,
                },
                ts=self.clock(),
            )
        except Exception as exc:  # failing again already: the count stays for the next time
            with self._cond:
                self._dropped_unreported += dropped
            log.warning("store_available_not_stored", error=repr(exc))
