"""The role the controller depends on to run replicas, whatever runs them.

Errors a backend raises (callers catch :class:`BackendError`)::

    BackendError             the action failed; the message says why and what to do
    ├── NoFreePort           every port of the configured range is taken (permanent
    │                        until a replica stops or the range grows)
    └── StartFailed          the replica could not be started (command not found, ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from skylift.model import Replica


class BackendError(Exception):
    """A backend action failed."""


class NoFreePort(BackendError):
    """No port of the service's range can be bound on loopback."""


class StartFailed(BackendError):
    """The replica's command could not be started at all."""


@runtime_checkable
class Backend(Protocol):
    """Start, stop, watch and re-find the replicas of one service.

    ``start``/``stop`` are async because they wait on the OS; the checks are
    sync and cheap so the controller can call them every tick.
    """

    async def start(self, service: str, replica_id: str) -> Replica:
        """Start one replica on a free port and return it (state STARTING)."""
        ...

    async def stop(self, replica: Replica, grace: float) -> int | None:
        """SIGTERM the replica (and its children), SIGKILL after ``grace`` seconds.

        Returns the exit code when known (negative: killed by that signal),
        ``None`` for a replica this backend did not start itself.
        """
        ...

    def is_alive(self, replica: Replica) -> bool:
        """True while the replica's own process (the one that was started) runs."""
        ...

    def exit_code(self, replica: Replica) -> int | None:
        """Exit code of a replica that has exited, if the backend could observe it."""
        ...

    def adopt(self, records: Sequence[Replica]) -> list[Replica]:
        """Take over replicas recorded by a previous controller that still run.

        Only records whose process is provably the same one are returned;
        anything else (gone, or its id reused by another process) is left out.
        """
        ...

    def log_path(self, replica: Replica) -> Path:
        """Where the replica's stdout and stderr go."""
        ...


@runtime_checkable
class Refreshable(Protocol):
    """A backend whose checks answer from a cached view of what runs (docker, swarm).

    ``is_alive``/``exit_code`` must never wait on a remote daemon; such a backend
    re-reads what runs once per tick in :meth:`refresh` (off the event loop, with a
    timeout), so a hung daemon stalls only the loop of the services that use it.
    """

    async def refresh(self) -> None:
        """Re-read what runs; raise :class:`BackendError` when the daemon does not answer."""
        ...

    def dependency(self) -> str:
        """What ``refresh`` waits on, for ``/livez`` and events ("the Docker Engine ...")."""
        ...


@runtime_checkable
class Stamped(Protocol):
    """A backend that marks each replica it starts with the controller's epoch (fencing
    token): ``SKYLIFT_EPOCH`` in a process's environment, the ``skylift.epoch`` label on
    a container. The controller's fence sets ``epoch`` before every start."""

    epoch: int | None
