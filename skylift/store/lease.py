"""The controller lease: one active controller per store, proven again every tick.

A session lock alone is no lease: a controller frozen with SIGSTOP keeps its
connection (and its lock) forever, and a dropped lock connection goes unnoticed
by the process that held it. So the store keeps a lease row, for SQLite and
PostgreSQL alike (table ``controller_lease``):

- ``token``/``holder``: who holds it; ``epoch``: the fencing token, one more at
  every take-over and stamped on every action; ``expires_at``: judged by the
  database's clock (PostgreSQL) or the host's (SQLite, one host by nature).
- The holder renews it every tick (``renew``, a compare-and-swap on its own
  token and epoch). It trusts its lease locally for only ``window`` =
  ``duration / 3`` after the *start* of its last successful renewal (monotonic
  clock); past that it must renew before it may act again.
- A newcomer takes over (``try_take``, a compare-and-swap on the row's
  ``serial``, bumping ``epoch``) when the lease has expired, or at once when the
  holder's *personal lock* is free: each holder keeps a ``flock`` on its own
  file (SQLite) or a session advisory lock keyed by its token (PostgreSQL), so a
  holder that crashed (even SIGKILL) does not block its replacement for a whole
  lease. A holder that is alive but lost that lock (its connection was
  terminated) cannot be told from a dead one, so a newcomer that took over this
  way waits ``grace`` (the old holder's ``window``) before it acts: by then the
  old holder's local trust has run out and its next renewal finds the new epoch.
- A frozen holder (SIGSTOP) keeps its personal lock, so a newcomer waits for
  the expiry; when the frozen one wakes, its monotonic clock says its window
  ran out, its renewal finds another epoch, and it acts on nothing.

Errors (all :class:`~skylift.store.lock.ControllerLockError`)::

    ControllerAlreadyRunning   try_take found a live holder (see ``current``)
    ControllerLockLost
    └── LeaseLost              another controller took the lease: never act again
    LeaseUnverified            the store could not be reached to renew: hold off
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from skylift.store.lock import ControllerLock, ControllerLockError, ControllerLockLost
from skylift.store.tables import LeaseRow

LEASE_NAME = "controller"
DEFAULT_DURATION = 10.0
PG_TIMEOUT = 3  # seconds: connect, statement and lock timeouts of every lease query
APP_PREFIX = "skylift-controller"
"""PostgreSQL ``application_name`` of every lease connection (``pid=... host=...`` follow)."""

Clock = Callable[[], float]


class LeaseLost(ControllerLockLost):
    """Another controller holds the lease now: this one must never act again."""


class LeaseUnverified(ControllerLockError):
    """The lease could not be renewed (store unreachable): act on nothing until it is."""


@dataclass(frozen=True, slots=True)
class LeaseView:
    """The lease row as last read, with the clock that judged it."""

    epoch: int
    serial: int
    token: str
    holder: dict[str, Any]
    duration: float
    expires_at: float
    now: float

    @property
    def expires_in(self) -> float:
        return self.expires_at - self.now

    def describe(self) -> str:
        pid, host = self.holder.get("pid"), self.holder.get("host")
        return f"epoch {self.epoch} held by pid {pid} on host {host}"


def identity(owner: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "owner": owner, "since": time.time()}


class PersonalLock(Protocol):
    """A lock only its holder's process (or connection) keeps: free once it is gone."""

    token: str

    def hold(self) -> None:
        """Take the lock, or take it again after it was dropped; raise LeaseUnverified."""
        ...

    def holder_gone(self, conn: Connection, token: str) -> bool:
        """True when the holder of ``token`` no longer holds its personal lock."""
        ...

    def close(self) -> None: ...


class FilePersonalLock:
    """``flock`` on ``<state_dir>/controller-<token>.lock`` (SQLite stores: one host)."""

    def __init__(self, state_dir: Path, token: str, owner: str) -> None:
        self.state_dir = state_dir
        self.token = token
        self.owner = owner
        self._fd: int | None = None

    def path(self, token: str) -> Path:
        return self.state_dir / f"controller-{token}.lock"

    def hold(self) -> None:
        if self._fd is not None:
            return  # a flock is never taken from a live process
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a replica spawned by the controller must not inherit (and keep) it
        fd = os.open(self.path(self.token), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise LeaseUnverified(f"cannot lock {self.path(self.token)}: {exc}") from exc
        os.pwrite(fd, json.dumps(identity(self.owner)).encode(), 0)
        self._fd = fd

    def holder_gone(self, conn: Connection, token: str) -> bool:
        path = self.path(token)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        else:
            with contextlib.suppress(OSError):
                path.unlink()  # its holder is gone: no stale file left behind
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            self.path(self.token).unlink()
        os.close(fd)


def advisory_key(token: str) -> int:
    """A positive 64-bit advisory lock key derived from a holder's token."""
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big") & (2**63 - 1)


class PgPersonalLock:
    """Session advisory lock keyed by the token, on a connection of its own."""

    def __init__(self, engine: Engine, token: str) -> None:
        self.engine = engine
        self.token = token
        self._conn: Connection | None = None

    def hold(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return
            except SQLAlchemyError:
                self._drop()  # terminated or broken: take it again on a new connection
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as exc:
            raise LeaseUnverified(f"cannot connect for the personal lock: {exc}") from exc
        try:
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key(self.token)}
            ).scalar_one()
            conn.commit()
        except SQLAlchemyError as exc:
            _discard(conn)
            raise LeaseUnverified(f"cannot take the personal lock: {exc}") from exc
        if not got:  # a newcomer is checking it this instant: try again next renewal
            _discard(conn)
            raise LeaseUnverified("personal lock busy")
        self._conn = conn

    def holder_gone(self, conn: Connection, token: str) -> bool:
        # xact lock: released when the caller's transaction ends
        got = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": advisory_key(token)}
        ).scalar_one()
        return bool(got)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _discard(conn)

    def close(self) -> None:
        self._drop()


def _discard(conn: Connection) -> None:
    """Close for sure: the server session ends, so nothing it held stays held."""
    with contextlib.suppress(SQLAlchemyError):
        conn.invalidate()
    with contextlib.suppress(SQLAlchemyError):
        conn.close()


def pg_lease_engine(url: Any, owner: str) -> Engine:
    """A small engine of the lease's own: bounded timeouts, a name that shows who holds it."""
    me = identity(owner)
    label = f"{APP_PREFIX} pid={me['pid']} host={me['host']} owner={owner}"[:63]
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=1,
        max_overflow=2,
        connect_args={
            "connect_timeout": PG_TIMEOUT,
            "application_name": label,
            "options": f"-c statement_timeout={PG_TIMEOUT * 1000} "
            f"-c lock_timeout={PG_TIMEOUT * 1000}",
        },
    )


class Lease(ControllerLock):
    """This controller's claim on the lease; ``epoch`` is set while it holds it."""

    def __init__(
        self,
        engine: Engine,
        personal: PersonalLock,
        who: dict[str, Any],
        *,
        duration: float = DEFAULT_DURATION,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        name: str = LEASE_NAME,
        own_engine: bool = False,
    ) -> None:
        super().__init__(str(who.get("owner", "")))
        self.engine = engine
        self.personal = personal
        self.who = who
        self.duration = duration
        self.clock = clock  # the host's clock, for a database without one (SQLite)
        self.monotonic = monotonic
        self.name = name
        self.own_engine = own_engine  # dispose the engine on release
        self.epoch: int | None = None
        self.lost: str | None = None
        self.grace = 0.0  # seconds to wait before acting after a fast take-over
        self.current: LeaseView | None = None
        self._valid_until = float("-inf")
        self._mutex = threading.RLock()

    @property
    def token(self) -> str:
        return self.personal.token

    @property
    def window(self) -> float:
        """How long one renewal is trusted locally (and a fast take-over waits)."""
        return self.duration / 3

    # -- queries -----------------------------------------------------------

    def _now(self, conn: Connection) -> float:
        if conn.dialect.name == "postgresql":
            now = conn.execute(text("SELECT extract(epoch FROM clock_timestamp())::float8"))
            return float(now.scalar_one())
        return self.clock()

    def _read(self, conn: Connection, now: float) -> LeaseView | None:
        table = LeaseRow.__table__
        row = conn.execute(select(table).where(table.c.name == self.name)).first()
        if row is None:
            return None
        return LeaseView(
            row.epoch,
            row.serial,
            row.token,
            dict(row.holder or {}),
            row.duration,
            row.expires_at,
            now,
        )

    def read(self) -> LeaseView | None:
        """The lease as the store sees it now (for status and tests)."""
        with self.engine.begin() as conn:
            return self._read(conn, self._now(conn))

    # -- taking, renewing, releasing -----------------------------------------

    def try_take(self, *, standby: bool = False) -> bool:
        """One attempt to become the holder; ``current`` shows who holds it otherwise.

        A ``standby`` never takes a lease given up by ``skylift down`` (``down`` in the
        holder): the operator stopped the service, a standby must not start it again.
        """
        with self._mutex:
            if self.held:
                return True
            started = self.monotonic()
            self.personal.hold()  # mine first: from the row's first write I look alive
            values: dict[str, Any]
            try:
                with self.engine.begin() as conn:
                    now = self._now(conn)
                    seen = self._read(conn, now)
                    values = {
                        "serial": 1 if seen is None else seen.serial + 1,
                        "epoch": 1 if seen is None else seen.epoch + 1,
                        "token": self.token,
                        "holder": self.who,
                        "duration": self.duration,
                        "acquired_at": now,
                        "renewed_at": now,
                        "expires_at": now + self.duration,
                    }
                    if seen is None:
                        conn.execute(insert(LeaseRow).values(name=self.name, **values))
                        grace = 0.0
                    else:
                        self.current = seen
                        expired = now >= seen.expires_at
                        if standby and seen.holder.get("down"):
                            return False
                        if not expired and not self.personal.holder_gone(conn, seen.token):
                            return False
                        swapped = conn.execute(
                            update(LeaseRow)
                            .where(
                                LeaseRow.name == self.name,
                                LeaseRow.epoch == seen.epoch,
                                LeaseRow.serial == seen.serial,
                            )
                            .values(**values)
                        )
                        if swapped.rowcount != 1:
                            return False  # renewed or taken meanwhile
                        # the holder may be alive without its lock: outwait its local trust
                        grace = 0.0 if expired else seen.duration / 3
            except IntegrityError:
                return False  # another newcomer inserted the first row
            except SQLAlchemyError as exc:
                raise LeaseUnverified(f"cannot read the controller lease: {exc}") from exc
            self.epoch = int(values["epoch"])
            self.lost = None
            self.grace = grace
            self.current = LeaseView(
                self.epoch,
                int(values["serial"]),
                self.token,
                self.who,
                self.duration,
                float(values["expires_at"]),
                float(values["renewed_at"]),
            )
            self._valid_until = started + self.window
            return True

    def renew(self) -> int:
        """Extend the lease; returns the epoch. LeaseLost: taken; LeaseUnverified: unreachable."""
        with self._mutex:
            if self.lost is not None:
                raise LeaseLost(self.lost)
            if self.epoch is None:
                raise ControllerLockLost("the controller lease is not held")
            started = self.monotonic()
            try:
                self.personal.hold()  # a dropped lock connection is re-taken first
                with self.engine.begin() as conn:
                    now = self._now(conn)
                    renewed = conn.execute(
                        update(LeaseRow)
                        .where(
                            LeaseRow.name == self.name,
                            LeaseRow.token == self.token,
                            LeaseRow.epoch == self.epoch,
                        )
                        .values(
                            serial=LeaseRow.serial + 1,
                            renewed_at=now,
                            expires_at=now + self.duration,
                        )
                    )
                    if renewed.rowcount != 1:
                        self.current = self._read(conn, now)
                        taken = self.current.describe() if self.current else "no lease row"
                        self.lost = f"lease of epoch {self.epoch} lost: the store now shows {taken}"
            except SQLAlchemyError as exc:
                raise LeaseUnverified(f"cannot renew the controller lease: {exc}") from exc
            if self.lost is not None:
                raise LeaseLost(self.lost)
            self._valid_until = started + self.window
            return self.epoch

    def valid(self) -> bool:
        """Held and renewed within ``window`` by the local monotonic clock (no I/O)."""
        return self.held and self.monotonic() < self._valid_until

    @property
    def held(self) -> bool:
        return self.epoch is not None and self.lost is None

    def check(self) -> None:
        self.renew()

    def release(self, *, down: bool = False) -> None:
        """Give the lease up at once (expired now) so a standby need not wait.

        ``down``: the operator stopped everything; standbys must not take over.
        """
        with self._mutex:
            if self.held:
                values: dict[str, Any] = {"serial": LeaseRow.serial + 1}
                if down:
                    values["holder"] = {**self.who, "down": True}
                with contextlib.suppress(SQLAlchemyError), self.engine.begin() as conn:
                    now = self._now(conn)
                    conn.execute(
                        update(LeaseRow)
                        .where(
                            LeaseRow.name == self.name,
                            LeaseRow.token == self.token,
                            LeaseRow.epoch == self.epoch,
                        )
                        .values(expires_at=now, **values)
                    )
            self.epoch = None
            self._valid_until = float("-inf")
            self.personal.close()
            if self.own_engine:
                self.engine.dispose()


def new_token() -> str:
    return secrets.token_hex(8)
