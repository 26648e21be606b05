"""Plain data shared by backends, the balancer, the store and the controller.

Kept free of I/O so every layer can import it without pulling in another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ReplicaState(enum.StrEnum):
    """Life cycle of one replica as the controller sees it."""

    STARTING = "starting"  # process running, not yet healthy in HAProxy
    READY = "ready"  # healthy and taking traffic
    DRAINING = "draining"  # no new requests, finishing the ones in flight
    UNHEALTHY = "unhealthy"  # failed its health check `fall` times or exited
    STOPPED = "stopped"  # gone


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
