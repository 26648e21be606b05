"""One controller per state store.

Two controllers on the same state would fight: each would start replicas the
other then sees as strays. The lock is tied to the life of the controller
process, so a crash (even SIGKILL) frees it and a restart is never blocked:

- SQLite: ``flock`` on ``<state_dir>/controller.lock``, dropped by the kernel
  when the holder's file descriptor closes.
- PostgreSQL: a session advisory lock on a dedicated connection, dropped by the
  server when that connection ends.

Errors::

    ControllerLockError
    ├── ControllerAlreadyRunning   another live process holds the lock
    └── ControllerLockLost         the PostgreSQL lock connection died
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

# "skylift\x01" / "skylift\x02": positive 64-bit keys, unlikely to clash with an application's.
CONTROLLER_LOCK_KEY = 0x736B796C69667401
MIGRATION_LOCK_KEY = 0x736B796C69667402


class ControllerLockError(Exception):
    """Base of the controller lock errors."""


class ControllerAlreadyRunning(ControllerLockError):
    """Another controller holds the lock; ``holder`` describes it."""

    def __init__(self, store: str, holder: dict[str, Any]) -> None:
        self.store = store
        self.holder = holder
        pid, host = holder.get("pid"), holder.get("host")
        who = f"pid {pid} on host {host}" if pid else "an unknown process"
        if holder.get("owner"):
            who += f" (owner {holder['owner']!r})"
        stop = f"or stop process {pid} on {host}" if pid else "or stop that controller"
        super().__init__(
            f"another skylift controller is already running on {store}: held by {who}; "
            f"run `skylift down` {stop}, then retry (the lock frees itself when that "
            "process exits)"
        )


class ControllerLockLost(ControllerLockError):
    """The lock can no longer be guaranteed (its database connection is gone)."""


def _identity(owner: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "owner": owner, "since": time.time()}


class ControllerLock:
    """Held until :meth:`release` (or process exit). Use as a context manager."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    @property
    def held(self) -> bool:
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`ControllerLockLost` if the lock is no longer held."""

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class FileControllerLock(ControllerLock):
    """``flock`` on a file in the state directory (SQLite stores)."""

    def __init__(self, path: Path, owner: str, fd: int) -> None:
        super().__init__(owner)
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, owner: str) -> FileControllerLock:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a replica spawned by the controller must not inherit (and keep) the lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ControllerAlreadyRunning(str(path), holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_identity(owner)).encode(), 0)
        return cls(path, owner, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no stale holder info for the next reader
        os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class PostgresControllerLock(ControllerLock):
    """Session advisory lock on a connection kept open for the controller's life."""

    def __init__(self, conn: Connection, owner: str) -> None:
        super().__init__(owner)
        self._conn: Connection | None = conn

    @classmethod
    def acquire(cls, engine: Engine, owner: str, store: str) -> PostgresControllerLock:
        me = _identity(owner)
        # application_name shows who holds the lock to the next one who tries
        label = f"skylift-controller pid={me['pid']} host={me['host']} owner={owner}"[:63]
        conn = engine.connect()
        try:
            conn.execute(
                text("SELECT set_config('application_name', :label, false)"), {"label": label}
            )
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": CONTROLLER_LOCK_KEY}
            ).scalar_one()
            conn.commit()  # the lock is session-level: it outlives this transaction
            if not got:
                raise ControllerAlreadyRunning(store, _pg_holder(conn))
        except BaseException:
            conn.invalidate()  # really close, so nothing we took stays held
            conn.close()
            raise
        return cls(conn, owner)

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.invalidated

    def check(self) -> None:
        if self._conn is None:
            raise ControllerLockLost("the controller lock was released")
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
        except DBAPIError as exc:
            raise ControllerLockLost(
                "lost the PostgreSQL connection that holds the controller lock; another "
                "controller may take over: stop this one and restart it"
            ) from exc

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        # Closing the server session is what releases a session lock for sure;
        # invalidate() keeps the pool from handing this connection out again.
        with contextlib.suppress(DBAPIError):
            conn.invalidate()
        conn.close()


def _pg_holder(conn: Connection) -> dict[str, Any]:
    row = conn.execute(
        text(
            "SELECT a.application_name, a.client_addr::text AS addr, a.pid "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
        ),
        {"hi": CONTROLLER_LOCK_KEY >> 32, "lo": CONTROLLER_LOCK_KEY & 0xFFFFFFFF},
    ).first()
    conn.rollback()
    if row is None:
        return {}
    fields = dict(part.split("=", 1) for part in str(row.application_name).split() if "=" in part)
    if "pid" in fields:
        return {"pid": fields["pid"], "host": fields.get("host"), "owner": fields.get("owner")}
    return {"pid": None, "host": row.addr, "owner": f"postgres backend {row.pid}"}
