"""In-memory stand-ins (balancer, store, metrics, clock): controller logic without I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skylift.backends.memory import MemoryBackend
from skylift.config import LoadedConfig, Service
from skylift.controller.core import Controller
from skylift.metrics import Collector, SourceError
from skylift.model import Replica
from skylift.store import Store


@dataclass
class FakeServer:
    state: str = "maint"  # maint -> down -> up, or drain
    sessions: int = 0

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    @property
    def is_down(self) -> bool:
        return self.state == "down"


@dataclass
class FakeBalancer:
    """Servers become UP on the tick after `add` unless a test says otherwise."""

    servers: dict[str, dict[str, FakeServer]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    unreachable: bool = False
    dead: bool = False  # unreachable because it died: revive() restarts it
    auto_up: bool = True
    failing: dict[str, int] = field(default_factory=dict)  # verb -> how many calls raise

    async def start(
        self, services: Mapping[str, Service], replicas: Mapping[str, Sequence[Replica]]
    ) -> None:
        for name in services:
            known = self.servers.setdefault(name, {})
            for r in replicas.get(name, ()):
                known.setdefault(r.id, FakeServer("up"))

    async def add(self, service: str, replica: Replica) -> None:
        self.calls.append(("add", replica.id))
        self.servers.setdefault(service, {})[replica.id] = FakeServer(
            "up" if self.auto_up else "down"
        )

    async def drain(self, service: str, replica_id: str) -> None:
        self.calls.append(("drain", replica_id))
        self._fault("drain")
        self.servers[service][replica_id].state = "drain"

    async def remove(self, service: str, replica_id: str) -> None:
        self.calls.append(("remove", replica_id))
        self._fault("remove")
        self.servers.get(service, {}).pop(replica_id, None)

    async def ready(self, service: str, replica_id: str) -> None:
        self.calls.append(("ready", replica_id))
        self._fault("ready")
        self.servers[service][replica_id].state = "up"

    async def hold(self, service: str, replica_id: str) -> None:
        self.calls.append(("hold", replica_id))
        self._fault("hold")
        self.servers[service][replica_id].state = "maint"

    def _fault(self, verb: str) -> None:
        """Raise while a test keeps ``failing[verb]`` above zero (counts down per call)."""
        if self.failing.get(verb, 0) > 0:
            self.failing[verb] -= 1
            raise ConnectionError(f"injected: {verb} failed")

    async def status(self, service: str) -> Mapping[str, Any]:
        if self.unreachable:
            raise ConnectionError("stats socket unavailable")
        return dict(self.servers.get(service, {}))

    async def revive(self) -> bool:
        """A dead fake (``unreachable`` and ``dead``) comes back empty, like a new HAProxy."""
        if not self.dead:
            return False
        self.calls.append(("revive", "*"))
        self.dead = self.unreachable = False
        self.servers = {name: {} for name in self.servers}
        return True

    async def stop(self) -> None:
        self.calls.append(("stop", "*"))


@dataclass
class FakeStore:
    replicas_by_id: dict[str, Replica] = field(default_factory=dict)
    events_list: list[dict[str, Any]] = field(default_factory=list)
    desired_by_service: dict[str, tuple[int, int | None]] = field(default_factory=dict)

    def upsert_replica(self, replica: Replica) -> None:
        self.replicas_by_id[replica.id] = replica

    def delete_replica(self, replica_id: str) -> None:
        self.replicas_by_id.pop(replica_id, None)

    def replicas(self, service: str | None = None) -> list[Replica]:
        return [r for r in self.replicas_by_id.values() if service in (None, r.service)]

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.events_list.append(
            {"kind": kind, "message": message, "service": service, "level": level, "data": data}
        )

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events_list]


class RpsSource:
    """A metric source the test turns up, down and off (``rps = None``: the source fails)."""

    name = "fake-rps"

    def __init__(self, rps: float | None = 0.0) -> None:
        self.rps = rps

    def provides(self, service: str) -> frozenset[str]:
        return frozenset({"rps"})

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        if self.rps is None:
            raise SourceError("stats socket unavailable", "start HAProxy")
        return {"rps": self.rps}


class Clock:
    """A monotonic clock the test moves by hand."""

    now = 100.0

    def __call__(self) -> float:
        return self.now


async def healthy(_: Replica) -> bool:
    return True


async def started_controller(
    loaded: LoadedConfig, store: Store, source: RpsSource, clock: Clock
) -> Controller:
    """A started Controller on memory replicas, a fake balancer and ``source`` as metrics."""
    collector = Collector(["web"], [source], interval=1.0, window=10.0, stale_after=2)
    ctl = Controller(
        loaded,
        store,
        FakeBalancer(),
        {"web": MemoryBackend("web")},
        clock=clock,
        probe=healthy,
        collector=collector,
    )
    await ctl.start()
    return ctl
