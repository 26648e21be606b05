"""An in-memory backend for controller tests and the simulator: no processes, no sockets.

Tests drive it by hand: :meth:`MemoryBackend.crash` makes a replica exit,
``fail_next_starts`` makes the next starts raise, ``survivors`` decides what a
"restarted controller" may adopt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from skylift.backends.base import NoFreePort, StartFailed
from skylift.model import Replica, ReplicaState


@dataclass
class MemoryBackend:
    """Fake replicas with ports handed out from ``first_port`` upwards.

    ``calls`` records every action as ``(verb, replica_id)`` so tests can
    assert on what the controller did, in order.
    """

    service_name: str
    first_port: int = 20000
    max_replicas: int = 1000
    log_dir: Path = Path("/nonexistent/skylift-memory-logs")
    fail_next_starts: int = 0
    fail_next_stops: int = 0
    running: dict[str, Replica] = field(default_factory=dict)
    exited: dict[str, int] = field(default_factory=dict)
    survivors: set[str] = field(default_factory=set)  # ids a fresh instance may adopt
    calls: list[tuple[str, str]] = field(default_factory=list)
    _next_pid: int = 1000

    async def start(self, service: str, replica_id: str) -> Replica:
        if service != self.service_name:
            raise ValueError(f"this backend runs {self.service_name!r}, not {service!r}")
        self.calls.append(("start", replica_id))
        if self.fail_next_starts > 0:
            self.fail_next_starts -= 1
            raise StartFailed(f"simulated start failure of {replica_id}")
        taken = {r.port for r in self.running.values()}
        ports = range(self.first_port, self.first_port + self.max_replicas)
        port = next((p for p in ports if p not in taken), None)
        if port is None:
            raise NoFreePort(f"all {self.max_replicas} fake ports are taken")
        self._next_pid += 1
        replica = Replica(
            id=replica_id,
            service=service,
            host="127.0.0.1",
            port=port,
            state=ReplicaState.STARTING,
            pid=self._next_pid,
            started_at=float(self._next_pid),
            handle={"pid": str(self._next_pid), "create_time": str(float(self._next_pid))},
        )
        self.running[replica_id] = replica
        self.exited.pop(replica_id, None)
        self.survivors.add(replica_id)
        return replica

    async def stop(self, replica: Replica, grace: float) -> int | None:
        self.calls.append(("stop", replica.id))
        if self.fail_next_stops > 0:
            self.fail_next_stops -= 1
            raise OSError(f"simulated stop failure of {replica.id}")
        self.survivors.discard(replica.id)
        if self.running.pop(replica.id, None) is not None:
            self.exited[replica.id] = -15
        return self.exited.get(replica.id)

    def is_alive(self, replica: Replica) -> bool:
        return replica.id in self.running

    def exit_code(self, replica: Replica) -> int | None:
        return self.exited.get(replica.id)

    def adopt(self, records: Sequence[Replica]) -> list[Replica]:
        adopted = []
        for record in records:
            if record.service == self.service_name and record.id in self.survivors:
                self.running[record.id] = replace(record)
                adopted.append(record)
        return adopted

    def find(self) -> list[Replica]:
        """Every running fake replica, like Docker's listing by label (strays included)."""
        return [replace(r) for r in self.running.values()]

    def log_path(self, replica: Replica) -> Path:
        return self.log_dir / replica.service / f"{replica.id}.log"

    # -- test controls -------------------------------------------------------

    def crash(self, replica_id: str, code: int = 1) -> None:
        """Make a running replica exit with ``code`` (as if the process died)."""
        self.running.pop(replica_id)
        self.survivors.discard(replica_id)
        self.exited[replica_id] = code
