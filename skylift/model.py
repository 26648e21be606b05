"""Plain data shared by backends, the balancer, the store and the controller.

Kept free of I/O so every layer can import it without pulling in another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ReplicaState(enum.StrEnum):
    """Life cycle of one replica as the controller sees it (persisted with the replica).

    starting -> ready [-> held -> ready] -> draining -> removed -> stopping -> stopped;
    a replica that failed skips the drain: unhealthy -> removed -> stopping -> stopped.
    Each arrow is one idempotent step, retried on the next tick when it fails, so a
    restarted controller resumes a replica from the state it was recorded in.
    """

    STARTING = "starting"  # process running, not yet healthy in HAProxy
    READY = "ready"  # healthy and taking traffic
    HELD = "held"  # kept out of rotation (MAINT) by an operator until released
    DRAINING = "draining"  # no new requests, finishing the ones in flight
    UNHEALTHY = "unhealthy"  # failed its health check `fall` times or exited: no drain
    REMOVED = "removed"  # out of HAProxy, process not yet stopped
    STOPPING = "stopping"  # being stopped by the backend
    STOPPED = "stopped"  # gone

    @property
    def retiring(self) -> bool:
        """On its way out: the states a restarted controller finishes rather than keeps."""
        return self in _RETIRING


_RETIRING = frozenset(
    {
        ReplicaState.DRAINING,
        ReplicaState.UNHEALTHY,
        ReplicaState.REMOVED,
        ReplicaState.STOPPING,
        ReplicaState.STOPPED,
    }
)


@dataclass(slots=True)
class Replica:
    """One running copy of a service, wherever it runs.

    ``handle`` is what the backend needs to find the replica again after a
    controller restart (a PID with its start time, a container id, ...).
    """

    id: str
    service: str
    host: str
    port: int
    state: ReplicaState = ReplicaState.STARTING
    pid: int | None = None
    started_at: float | None = None  # process/container start time, for adoption checks
    handle: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
