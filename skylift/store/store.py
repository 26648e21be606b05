"""The state store: replicas, events, per-service state and scaling decisions.

Calls are synchronous and short; the controller runs them in a worker thread
(``asyncio.to_thread``). Each call is its own transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine, create_engine, delete, event, func, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from skylift.model import Replica, ReplicaState
from skylift.store import migrate
from skylift.store.history import History
from skylift.store.lease import (
    DEFAULT_DURATION,
    FilePersonalLock,
    Lease,
    PersonalLock,
    PgPersonalLock,
    identity,
    new_token,
    pg_lease_engine,
)
from skylift.store.lock import ControllerAlreadyRunning
from skylift.store.records import Decision, Event, ServiceState
from skylift.store.tables import (
    AutoscalePauseRow,
    DecisionRow,
    EventRow,
    LoadBucketRow,
    ReplicaRow,
    ServiceRow,
)
from skylift.store.urls import default_url, masked, parse_url

LEVELS = ("debug", "info", "warning", "error")
PG_CONNECT_TIMEOUT = 5
"""Seconds to open a PostgreSQL connection before the call fails (and is retried)."""
Clock = Callable[[], float]


class Store:
    """Remembers what the controller must find again after a restart.

    Build it with :meth:`open`, which creates the database if needed and
    applies migrations; the constructor itself does no I/O.
    """

    def __init__(self, engine: Engine, *, state_dir: Path, clock: Clock = time.time) -> None:
        self._engine = engine
        self._state_dir = state_dir
        self._clock = clock
        self._session = sessionmaker(engine, expire_on_commit=False)

    @property
    def clock(self) -> Clock:
        """The wall clock rows are stamped and pruned by (replaceable in tests)."""
        return self._clock

    @classmethod
    def open(
        cls, url: str | None = None, *, state_dir: Path | None = None, clock: Clock = time.time
    ) -> Self:
        """Connect to ``url`` and migrate it to the newest schema.

        ``url`` defaults to SQLite in ``state_dir``. For SQLite the controller
        lock file lives in ``state_dir``, by default the database's directory.
        """
        if url is None:
            if state_dir is None:
                raise ValueError("give a store url or a state directory")
            url = default_url(state_dir)
        parsed = parse_url(url)
        if state_dir is None:
            state_dir = _default_state_dir(parsed)
        store = cls(_engine(parsed, state_dir), state_dir=state_dir, clock=clock)
        try:
            migrate.upgrade(store._engine, state_dir)
        except BaseException:
            store.close()
            raise
        return store

    @property
    def history(self) -> History:
        """Load history and API-added scaling events (see ``skylift.store.history``)."""
        return History(self._session, self._clock)

    @property
    def url(self) -> str:
        """The database URL with its password masked: safe to show."""
        return masked(self._engine.url)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- controller lock -----------------------------------------------------

    def controller_lease(
        self,
        owner: str,
        *,
        duration: float = DEFAULT_DURATION,
        monotonic: Clock = time.monotonic,
    ) -> Lease:
        """A claim on the controller lease, not yet taken (see ``skylift.store.lease``)."""
        token = new_token()
        personal: PersonalLock
        if self.dialect == "postgresql":
            engine = pg_lease_engine(self._engine.url, owner)
            personal = PgPersonalLock(engine, token)
            return Lease(
                engine,
                personal,
                identity(owner),
                duration=duration,
                clock=self._clock,
                monotonic=monotonic,
                own_engine=True,
            )
        personal = FilePersonalLock(self._state_dir, token, owner)
        return Lease(
            self._engine,
            personal,
            identity(owner),
            duration=duration,
            clock=self._clock,
            monotonic=monotonic,
        )

    def acquire_controller_lock(self, owner: str, *, duration: float = DEFAULT_DURATION) -> Lease:
        """Become the one controller of this store, or raise ControllerAlreadyRunning."""
        lease = self.controller_lease(owner, duration=duration)
        try:
            taken = lease.try_take()
        except BaseException:
            lease.release()
            raise
        if not taken:
            holder = lease.current.holder if lease.current else {}
            lease.release()
            raise ControllerAlreadyRunning(self.url, holder)
        return lease

    # -- replicas ------------------------------------------------------------

    def upsert_replica(self, replica: Replica) -> None:
        now = self._clock()
        with self._session.begin() as session:
            row = session.get(ReplicaRow, replica.id)
            if row is None:
                row = ReplicaRow(id=replica.id, created_at=now)
                session.add(row)
            row.service = replica.service
            row.host = replica.host
            row.port = replica.port
            row.pid = replica.pid
            row.started_at = replica.started_at
            row.state = replica.state.value
            row.handle = dict(replica.handle)
            row.updated_at = now

    def delete_replica(self, replica_id: str) -> bool:
        """Forget a replica; False if it was not recorded."""
        with self._session.begin() as session:
            result = session.execute(delete(ReplicaRow).where(ReplicaRow.id == replica_id))
            return bool(getattr(result, "rowcount", 0))

    def replicas(self, service: str | None = None) -> list[Replica]:
        query = select(ReplicaRow).order_by(ReplicaRow.service, ReplicaRow.id)
        if service is not None:
            query = query.where(ReplicaRow.service == service)
        with self._session() as session:
            return [_replica(row) for row in session.scalars(query)]

    # -- events --------------------------------------------------------------

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        data: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> Event:
        """Record an event; ``ts`` is when it happened (default now: a write-behind
        writer passes the time it was asked for, not the time it lands)."""
        if level not in LEVELS:
            raise ValueError(f"unknown event level {level!r}: use one of {', '.join(LEVELS)}")
        row = EventRow(
            ts=self._clock() if ts is None else ts,
            service=service,
            kind=kind,
            level=level,
            message=message,
            data=dict(data or {}),
        )
        with self._session.begin() as session:
            session.add(row)
        return _event(row)

    def events(
        self,
        service: str | None = None,
        since: float | None = None,
        limit: int = 100,
        *,
        after_id: int | None = None,
    ) -> list[Event]:
        """Events in time order.

        Without ``since``/``after_id``: the newest ``limit``. With either: the
        oldest ``limit`` from that point on, so a follower pages forward
        without gaps (pass the last id seen as ``after_id``).
        """
        query = select(EventRow)
        if service is not None:
            query = query.where(EventRow.service == service)
        if since is not None:
            query = query.where(EventRow.ts >= since)
        if after_id is not None:
            query = query.where(EventRow.id > after_id)
        forward = since is not None or after_id is not None
        order = (EventRow.ts, EventRow.id) if forward else (EventRow.ts.desc(), EventRow.id.desc())
        with self._session() as session:
            rows = list(session.scalars(query.order_by(*order).limit(limit)))
        events = [_event(row) for row in rows]
        return events if forward else events[::-1]

    def prune_events(self, before: float) -> int:
        """Delete events older than ``before`` (epoch seconds); returns how many."""
        with self._session.begin() as session:
            result = session.execute(delete(EventRow).where(EventRow.ts < before))
            return int(getattr(result, "rowcount", 0))

    # -- per-service state ---------------------------------------------------

    def set_desired(self, service: str, n: int, *, configured: int | None = None) -> None:
        """Remember the desired count; ``configured`` records the config's count it came from.

        Keeping the configured count lets the controller tell "the operator ran
        `skylift scale`" (keep it) from "the config file changed" (use the file).
        """
        if n < 0:
            raise ValueError(f"desired replicas must be >= 0, got {n}")
        with self._session.begin() as session:
            row = self._service_row(session, service)
            row.desired = n
            if configured is not None:
                row.configured = configured

    def configured_replicas(self, service: str) -> int | None:
        """The config's replica count recorded by the last ``set_desired(configured=...)``."""
        with self._session() as session:
            row = session.get(ServiceRow, service)
            return None if row is None else row.configured

    def desired(self, service: str) -> int | None:
        with self._session() as session:
            row = session.get(ServiceRow, service)
            return None if row is None else row.desired

    def set_crash_state(self, service: str, state: Mapping[str, Any]) -> None:
        """Keep restart back-off counters so a controller restart does not reset them."""
        with self._session.begin() as session:
            self._service_row(session, service).crash_state = dict(state)

    def service_state(self, service: str) -> ServiceState | None:
        with self._session() as session:
            row = session.get(ServiceRow, service)
            if row is None:
                return None
            return ServiceState(
                row.name, row.desired, row.configured, dict(row.crash_state), row.updated_at
            )

    def _service_row(self, session: Session, service: str) -> ServiceRow:
        row = session.get(ServiceRow, service)
        if row is None:
            row = ServiceRow(name=service, desired=None, configured=None, crash_state={})
            session.add(row)
        row.updated_at = self._clock()
        return row

    # -- autoscaling paused by an operator ------------------------------------

    def set_autoscale_paused(self, service: str, paused: bool, reason: str = "") -> None:
        """Pause (or resume) a service's autoscaling; kept until resumed, across restarts."""
        with self._session.begin() as session:
            row = session.get(AutoscalePauseRow, service)
            if not paused:
                if row is not None:
                    session.delete(row)
                return
            if row is None:
                session.add(
                    AutoscalePauseRow(service=service, paused_at=self._clock(), reason=reason)
                )

    def autoscale_pauses(self) -> dict[str, float]:
        """Every paused service and since when (epoch seconds)."""
        with self._session() as session:
            return {r.service: r.paused_at for r in session.scalars(select(AutoscalePauseRow))}

    # -- scaling decisions ---------------------------------------------------

    def record_decision(
        self,
        service: str,
        desired: int,
        direction: str,
        reasons: Sequence[str],
        inputs: Mapping[str, Any] | None = None,
        *,
        ts: float | None = None,
    ) -> Decision:
        row = DecisionRow(
            ts=self._clock() if ts is None else ts,
            service=service,
            desired=desired,
            direction=direction,
            reasons=list(reasons),
            inputs=dict(inputs or {}),
        )
        with self._session.begin() as session:
            session.add(row)
        return _decision(row)

    def decisions(self, service: str | None = None, limit: int = 100) -> list[Decision]:
        """The newest ``limit`` decisions, in time order."""
        query = select(DecisionRow).order_by(DecisionRow.ts.desc(), DecisionRow.id.desc())
        if service is not None:
            query = query.where(DecisionRow.service == service)
        with self._session() as session:
            rows = list(session.scalars(query.limit(limit)))
        return [_decision(row) for row in reversed(rows)]

    # -- retention -----------------------------------------------------------

    def prune(self, *, events: int, decisions: float, history: float) -> Pruned:
        """Keep the newest ``events`` events, ``decisions`` and ``history`` seconds of
        decisions and load history (ages by this store's clock); what was deleted."""
        now = self._clock()
        return Pruned(
            events=self.prune_events_beyond(events),
            decisions=self.prune_decisions(now - decisions),
            history=self.history.prune(now - history),
        )

    def prune_events_beyond(self, keep: int) -> int:
        """Delete all events but the newest ``keep`` (by id: the order they were added)."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        newest_dropped = (
            select(EventRow.id).order_by(EventRow.id.desc()).offset(keep).limit(1)
        ).scalar_subquery()
        with self._session.begin() as session:
            result = session.execute(delete(EventRow).where(EventRow.id <= newest_dropped))
            return int(getattr(result, "rowcount", 0))

    def prune_decisions(self, before: float) -> int:
        """Delete decisions older than ``before`` (epoch seconds); returns how many."""
        with self._session.begin() as session:
            result = session.execute(delete(DecisionRow).where(DecisionRow.ts < before))
            return int(getattr(result, "rowcount", 0))

    def counts(self) -> dict[str, int]:
        """Rows per bounded table (events, decisions, load history): what retention bounds."""
        with self._session() as session:
            return {
                name: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for name, table in (
                    ("events", EventRow),
                    ("decisions", DecisionRow),
                    ("history", LoadBucketRow),
                )
            }


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one retention pass deleted, per table."""

    events: int
    decisions: int
    history: int

    @property
    def total(self) -> int:
        return self.events + self.decisions + self.history


def _engine(url: URL, state_dir: Path) -> Engine:
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3, not the psycopg2 default
    backend = url.get_backend_name()
    if backend == "postgresql":
        # a server that does not answer must not hold a writer (or the API) for minutes
        return create_engine(
            url, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT}
        )
    if backend != "sqlite":
        raise ValueError(
            f"unsupported store {masked(url)}: use sqlite:///PATH or postgresql+psycopg://..."
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _default_state_dir(url: URL) -> Path:
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent
    return Path.cwd()  # PostgreSQL keeps its locks in the database: nothing is written here


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers (status, API) never block the controller's writes.
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def _replica(row: ReplicaRow) -> Replica:
    return Replica(
        id=row.id,
        service=row.service,
        host=row.host,
        port=row.port,
        state=ReplicaState(row.state),
        pid=row.pid,
        started_at=row.started_at,
        handle={str(k): str(v) for k, v in (row.handle or {}).items()},
    )


def _event(row: EventRow) -> Event:
    return Event(
        id=row.id,
        ts=row.ts,
        kind=row.kind,
        message=row.message,
        service=row.service,
        level=row.level,
        data=dict(row.data),
    )


def _decision(row: DecisionRow) -> Decision:
    return Decision(
        id=row.id,
        ts=row.ts,
        service=row.service,
        desired=row.desired,
        direction=row.direction,
        reasons=list(row.reasons),
        inputs=dict(row.inputs),
    )
