"""One controller per state store: the errors and the base of the lock it holds.

Two controllers on the same state would fight: each would start replicas the
other then sees as strays. The lock itself is the controller lease in
``skylift.store.lease`` (an epoch-stamped lease row plus a personal lock per
holder, so a crash frees it at once and a frozen holder loses it on expiry).

Errors::

    ControllerLockError
    ├── ControllerAlreadyRunning   another live controller holds the lease
    ├── ControllerLockLost         the lease can no longer be guaranteed
    │   └── LeaseLost              another controller took it (lease.py)
    └── LeaseUnverified            the store could not be reached to renew it (lease.py)
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

# "skylift\x02": a positive 64-bit key, unlikely to clash with an application's.
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
