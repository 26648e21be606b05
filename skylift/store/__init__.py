"""The store remembers: replicas, events, per-service state, scaling decisions.

SQLite in the state directory by default, PostgreSQL by URL; the schema is
migrated with alembic whenever a store is opened.
"""

from skylift.store.lock import (
    ControllerAlreadyRunning,
    ControllerLock,
    ControllerLockError,
    ControllerLockLost,
)
from skylift.store.records import Decision, Event, ServiceState
from skylift.store.store import Store
from skylift.store.urls import default_url, masked

__all__ = [
    "ControllerAlreadyRunning",
    "ControllerLock",
    "ControllerLockError",
    "ControllerLockLost",
    "Decision",
    "Event",
    "ServiceState",
    "Store",
    "default_url",
    "masked",
]
