"""The narrow roles the controller depends on (the real ones live in backends/ and lb/)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from skylift.backends.base import Backend
from skylift.config import Service
from skylift.model import Replica

__all__ = [
    "Backend",
    "BackendEvent",
    "Balancer",
    "EventSource",
    "EventStream",
    "ReplicaFinder",
    "ReplicaRecords",
    "ServerView",
]


class ServerView(Protocol):
    """What the balancer reports of one server."""

    @property
    def is_up(self) -> bool: ...

    @property
    def is_down(self) -> bool: ...

    @property
    def sessions(self) -> int: ...


class Balancer(Protocol):
    """Steers traffic to a service's replicas (HAProxy in production)."""

    async def start(
        self, services: Mapping[str, Service], replicas: Mapping[str, Sequence[Replica]]
    ) -> None: ...

    async def add(self, service: str, replica: Replica) -> None: ...

    async def drain(self, service: str, replica_id: str) -> None: ...

    async def remove(self, service: str, replica_id: str) -> None: ...

    async def ready(self, service: str, replica_id: str) -> None:
        """Back in rotation (undoes drain and maint)."""
        ...

    async def hold(self, service: str, replica_id: str) -> None:
        """Out of rotation and checks (MAINT) until :meth:`ready`: an operator's hold."""
        ...

    async def status(self, service: str) -> Mapping[str, Any]: ...

    async def revive(self) -> bool:
        """Restart the balancer if it died (True when it did): the data plane comes back."""
        ...

    async def stop(self) -> None: ...


class ReplicaRecords(Protocol):
    """Where a service loop persists its replicas, so a restarted controller finds them."""

    def upsert_replica(self, replica: Replica) -> None: ...

    def delete_replica(self, replica_id: str) -> Any: ...


@runtime_checkable
class ReplicaFinder(Protocol):
    """A backend that can list what it runs for a service (docker, swarm): strays are found."""

    def find(self) -> list[Replica]:
        """Every running replica of this backend's service (blocking: call it in a thread)."""
        ...


class BackendEvent(Protocol):
    """A change the backend reports as it happens (a container died or turned unhealthy)."""

    @property
    def replica_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def exit_code(self) -> int | None: ...


class EventStream(Protocol):
    """An open subscription: iterate it, close it when done."""

    def __aiter__(self) -> AsyncIterator[BackendEvent]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EventSource(Protocol):
    """A backend that pushes replica deaths instead of waiting to be polled (docker)."""

    async def events(self) -> EventStream: ...


@runtime_checkable
class LosesNodes(Protocol):
    """A backend whose replicas can go with their node (multi-node swarm).

    Such a death is not the replica's fault: the controller replaces it without
    counting a crash (no start-up backoff) and says why.
    """

    def lost_node(self, replica: Replica) -> bool:
        """The replica's node is down, disconnected, drained or gone (last snapshot)."""
        ...
