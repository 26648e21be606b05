"""Replicas as one-task Docker Swarm services (``backend: {kind: swarm}``).

The Backend protocol is per replica: the controller starts one replica with
an id and later stops exactly that one, after draining it in HAProxy. Swarm
picks which task it removes when a service is scaled down, so a skylift
replica is **one Swarm service with ``replicas: 1``**, named
``<project>-<replica id>`` (``<project>-<service>-<id>`` when the id does not
start with the service name) and labelled ``skylift.project``,
``skylift.service`` and ``skylift.replica``. Scaling the skylift service is
creating or removing such services, so scale-in removes the drained replica
and nothing else.

Publishing is in **host mode** with an ephemeral port per task (the routing
mesh needs kernel IPVS, and the local HAProxy balances health-aware anyway);
the replica's address is ``127.0.0.1:<that port>``, read back from the task's
container. Host mode cannot bind one address: Docker listens on all
interfaces (see docs/swarm.md, Security).

Restart policy ``condition: none``: Swarm does not restart a dead task, so the
controller sees the death (``is_alive`` false, ``exit_code`` set) and replaces
the replica with a fresh one, as on the ``process`` and ``docker`` backends.

A replica is identified by service id *and* creation time, both kept in
``Replica.handle`` with the task and container ids; a restarted controller
adopts only services whose labels, id and creation time match its records.

Single-node only: the published port is reached on 127.0.0.1, so the task
must run on this node (the controller's node, a Swarm manager).

The Docker SDK is synchronous: ``start``/``stop`` run it in the backend's own
worker threads; ``is_alive``/``exit_code`` answer from the tasks and containers
that :meth:`refresh` lists once per tick (two list calls), never with a call of
their own on the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import docker
    import docker.errors
    import docker.types
    import requests
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the swarm backend needs the Docker SDK: pip install 'skylift[docker]'"
    ) from exc

from skylift.backends.base import BackendError, StartFailed
from skylift.backends.container import (
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    EngineBackend,
)
from skylift.backends.docker import Health, _epoch, _explain, _health
from skylift.backends.ports import LOOPBACK
from skylift.model import Replica, ReplicaState

if TYPE_CHECKING:
    from docker import DockerClient

    from skylift.config.swarm import SwarmBackend as SwarmBackendConfig

__all__ = ["LABEL_PROJECT", "LABEL_REPLICA", "LABEL_SERVICE", "SwarmBackend"]

DEFAULT_STOP_GRACE = 10.0  # seconds; ContainerSpec.StopGracePeriod for `docker service rm`
_START_WAIT = 30.0  # after create, longest wait for the task's container and port
_REMOVE_WAIT = 10.0  # after service rm, longest wait for the task's container to go
_POLL = 0.05
_LOG_TAIL = 20
# Swarm service names are DNS labels: letters, digits, '-' (and '_'), at most 63.
_REPLICA_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?$")
_NAME_MAX = 63
# task states before and while the container runs; anything else is final
_LIVE_STATES = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "ready", "preparing", "starting"}
    | {"running"}
)
_UNREACHABLE = (docker.errors.DockerException, requests.exceptions.RequestException, BackendError)


class SwarmBackend(EngineBackend):
    """Runs the replicas of one service as one-task services on this node's Swarm.

    No I/O happens here: the client (``client_factory``, default
    ``docker.from_env``, honouring ``DOCKER_HOST``) is created on first use.
    ``stop_grace`` is written into each service's ``ContainerSpec`` as the
    grace of a ``docker service rm`` done by hand; :meth:`stop` applies its
    own ``grace`` argument.
    """

    def __init__(
        self,
        service_name: str,
        config: SwarmBackendConfig,
        *,
        project: str,
        stop_grace: float = DEFAULT_STOP_GRACE,
        client_factory: Callable[[], DockerClient] | None = None,
        base_dir: Path | None = None,
    ) -> None:
        super().__init__(
            service_name,
            config,
            project=project,
            client_factory=client_factory,
            base_dir=base_dir,
        )
        self._stop_grace = stop_grace

    # -- the Backend protocol ------------------------------------------------

    async def start(self, service: str, replica_id: str) -> Replica:
        """Create the replica's one-task service; return once its port is published.

        Raises :class:`StartFailed` when the node is not a Swarm manager, the
        image is not local, Swarm rejects the service or the task fails
        before its port is published; the service is removed again then.
        """
        if service != self.service_name:
            raise ValueError(f"this backend runs {self.service_name!r}, not {service!r}")
        if not _REPLICA_ID.match(replica_id):
            raise ValueError(
                f"invalid replica id {replica_id!r}: use letters, digits, '_', '-' "
                "(it names a Swarm service)"
            )
        if len(self._object_name(replica_id)) > _NAME_MAX:
            raise ValueError(
                f"Swarm service name {self._object_name(replica_id)!r} is longer than "
                f"{_NAME_MAX} characters: shorten the project, service or replica id"
            )
        if replica_id in self._known:
            raise ValueError(f"replica {replica_id!r} is already running")
        replica = await self._call("create Swarm service", self._start_sync, replica_id)
        self._became_known(replica)
        return replica

    async def stop(self, replica: Replica, grace: float) -> int | None:
        """Stop the task's container with ``grace`` (whole seconds), then remove the service.

        Returns the container's exit code (Docker's: 137 after SIGKILL),
        ``None`` when the service is not this replica's (never touched) or
        was already removed with no exit code seen.
        """
        try:
            return await self._call(
                "stop and remove Swarm service", self._stop_sync, replica, grace
            )
        finally:
            self._forget(replica.id)

    def is_alive(self, replica: Replica) -> bool:
        """The service's task is starting or running and its container is not ``unhealthy``.

        Answered from the last lists of tasks and containers (no Engine call
        here); when they cannot tell (the Engine did not answer, or the replica
        is newer than the lists), the answer is True: an unknown state must not
        make the controller replace everything.
        """
        task = self._task_view(replica)
        if task is True:
            return True
        if not isinstance(task, Mapping):
            return False
        if _task_state(task) not in _LIVE_STATES:
            self._note_exit(replica, task)
            return False
        container_id = _container_id(task) or replica.handle.get("container_id", "")
        container = self._view(container_id, replica.id) if container_id else True
        if not isinstance(container, Mapping):
            return True  # not listed yet (the task is still preparing) or unknown
        return "(unhealthy)" not in str(container.get("Status", ""))

    def exit_code(self, replica: Replica) -> int | None:
        """Exit code of the task's container once the task ended (``None`` before)."""
        task = self._task_view(replica)
        if isinstance(task, Mapping):
            if _task_state(task) in _LIVE_STATES:
                return None
            self._note_exit(replica, task)
        return self._exit_codes.get(replica.id)

    def adopt(self, records: Sequence[Replica]) -> list[Replica]:
        """Records whose service still exists with the same id, creation time and labels,
        and still has a live task; the task, container and port are re-read from Swarm.
        """
        mine = [r for r in records if r.service == self.service_name]
        if not mine:
            return []
        services = {s["ID"]: s for s in self._services()}
        adopted = []
        for record in mine:
            spec = services.get(record.handle.get("service_id", ""))
            if spec is None or not self._is_record_of(spec, record):
                continue
            found = self._replica_of_service(spec)
            if found is None:
                continue
            replica = dataclasses.replace(record, port=found.port, handle=dict(found.handle))
            if found.pid is not None:
                replica.pid = found.pid
            self._became_known(replica)
            adopted.append(replica)
        return adopted

    def log_path(self, replica: Replica) -> Path:
        """The task container's json-file log (``docker service logs <name>`` reads it nicely)."""
        return Path(replica.handle.get("log", ""))

    # -- extras for the controller and operators -----------------------------

    def health(self, replica: Replica) -> Health | None:
        """The task container's HEALTHCHECK status, ``None`` without one (or when gone)."""
        task = self._task(replica)
        attrs = None if task is None else self._container(replica, task)
        return None if attrs is None else _health(attrs)

    def find(self) -> list[Replica]:
        """Every service of this project and service with a live task, as replicas."""
        out = []
        for spec in self._services():
            replica = self._replica_of_service(spec)
            if replica is not None:
                out.append(replica)
        return out

    # -- internals -----------------------------------------------------------

    @property
    def _api(self) -> Any:
        """The low-level client; the SDK's service and task calls are untyped."""
        return self.client.api

    def _check_swarm(self) -> None:
        info = self.client.info().get("Swarm") or {}
        if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
            raise StartFailed(
                "this Docker Engine is not a Swarm manager (state "
                f"{info.get('LocalNodeState', 'unknown')!r}): run "
                "`docker swarm init --advertise-addr 127.0.0.1` once"
            )

    def _start_sync(self, replica_id: str) -> Replica:
        cfg = self._config
        api = self._api
        self._check_swarm()
        try:
            self.client.images.get(cfg.image)
        except docker.errors.ImageNotFound:
            raise StartFailed(
                f"image {cfg.image!r} of {self.service_name!r} is not in the local Docker "
                "Engine and skylift never pulls: build or `docker load` it first"
            ) from None
        labels = self._labels(replica_id)
        env = self._env(replica_id)
        command = self._command(replica_id)
        container_spec = docker.types.ContainerSpec(
            cfg.image,
            # ContainerSpec.Command replaces the image's ENTRYPOINT; Args its CMD,
            # which is what `docker run IMAGE ARGS` (the docker backend) replaces.
            args=command,
            env=dict[str, str | bytes | None](env),
            labels=labels,
            stop_grace_period=round(self._stop_grace * 1e9),
        )
        task_template = docker.types.TaskTemplate(
            container_spec,
            resources=docker.types.Resources(
                cpu_limit=round(cfg.cpus * 1e9) if cfg.cpus is not None else None,
                mem_limit=cfg.memory,
            ),
            restart_policy=docker.types.RestartPolicy(condition="none"),
            log_driver=docker.types.DriverConfig("json-file", options=self._log_options()),
        )
        # host mode, no PublishedPort: each task gets an ephemeral host port
        # (the SDK's stubs know only its dict shorthand, which cannot say "host")
        ports: Any = [{"Protocol": "tcp", "TargetPort": cfg.port, "PublishMode": "host"}]
        endpoint = docker.types.EndpointSpec(ports=ports)
        name = self._object_name(replica_id)

        def create() -> str:
            created = api.create_service(
                task_template,
                name=name,
                labels=labels,
                mode=docker.types.ServiceMode("replicated", replicas=1),
                endpoint_spec=endpoint,
            )
            return str(created["ID"])

        try:
            try:
                service_id = create()
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                self._remove_leftover(name, replica_id)
                service_id = create()
        except docker.errors.APIError as exc:
            raise StartFailed(f"cannot create Swarm service {name!r}: {_explain(exc)}") from exc
        try:
            return self._wait_published(service_id, name)
        except BaseException as exc:
            with contextlib.suppress(docker.errors.DockerException):
                api.remove_service(service_id)
            if isinstance(exc, docker.errors.APIError):
                raise StartFailed(f"cannot start service {name!r}: {_explain(exc)}") from exc
            raise

    def _wait_published(self, service_id: str, name: str) -> Replica:
        """Poll until the task's container runs with its host port; StartFailed if it ends."""
        api = self._api
        deadline = time.monotonic() + _START_WAIT
        last_state = "none"
        while True:
            spec: dict[str, Any] = api.inspect_service(service_id)
            task = _current_task(api.tasks(filters={"service": service_id}))
            if task is not None:
                last_state = _task_state(task)
                if last_state not in _LIVE_STATES:
                    raise StartFailed(self._failure(task, name))
                replica = self._replica_from(spec, task)
                if replica is not None:
                    return replica
            if time.monotonic() >= deadline:
                raise StartFailed(
                    f"the task of Swarm service {name!r} was not running with a published "
                    f"port {self._config.port}/tcp within {_START_WAIT}s (task state "
                    f"{last_state!r}); see `docker service ps --no-trunc {name}`"
                )
            time.sleep(_POLL)

    def _failure(self, task: Mapping[str, Any], name: str) -> str:
        status = task.get("Status") or {}
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
        logs = ""
        if container_id:
            with contextlib.suppress(docker.errors.DockerException):
                raw = self.client.api.logs(container_id, tail=_LOG_TAIL)
                logs = raw.decode(errors="replace").strip()
        reason = status.get("Err") or status.get("Message") or status.get("State")
        return (
            f"the task of Swarm service {name!r} ended at once ({reason}"
            + (f", exit code {code}" if container_id else "")
            + ")"
            + (f"; last log lines:\n{logs}" if logs else "")
            + "\ncheck backend.image, backend.command and backend.port"
        )

    def _remove_leftover(self, name: str, replica_id: str) -> None:
        """A service with our name exists: remove it only if it is this replica's corpse."""
        api = self._api
        try:
            spec = api.inspect_service(name)
        except docker.errors.NotFound:
            return
        labels = spec["Spec"].get("Labels") or {}
        ours = (
            labels.get(LABEL_PROJECT) == self.project
            and labels.get(LABEL_SERVICE) == self.service_name
            and labels.get(LABEL_REPLICA) == replica_id
        )
        task = _current_task(api.tasks(filters={"service": spec["ID"]}))
        live = task is not None and _task_state(task) in _LIVE_STATES
        if not ours or live:
            raise StartFailed(
                f"a Swarm service named {name!r} already exists"
                + (" and runs" if live else "")
                + ("" if ours else " and is not skylift's")
                + f": remove it (`docker service rm {name}`) or use another project name"
            )
        api.remove_service(spec["ID"])

    def _stop_sync(self, replica: Replica, grace: float) -> int | None:
        service_id = replica.handle.get("service_id")
        if not service_id:
            return None
        api = self._api
        try:
            spec = api.inspect_service(service_id)
        except docker.errors.NotFound:
            return self._exit_codes.get(replica.id)
        if not self._is_record_of(spec, replica):
            return None  # not the service this replica created: never touch a stranger
        code: int | None = None
        try:
            # Stop the container ourselves so this call's grace applies (the spec's
            # StopGracePeriod is fixed at create; changing it would restart the task).
            # With restart condition none, Swarm does not start another task.
            container_id = replica.handle.get("container_id", "")
            if container_id:
                with contextlib.suppress(docker.errors.NotFound):
                    attrs = api.inspect_container(container_id)
                    if attrs["State"].get("Running"):
                        api.stop(container_id, timeout=max(0, math.ceil(grace)))
                    code = int(api.inspect_container(container_id)["State"].get("ExitCode", 0))
            if code is None:
                task = self._task(replica)
                if task is not None and _task_state(task) not in _LIVE_STATES:
                    code = _exit_of(task)
            if code is not None:
                self._exit_codes[replica.id] = code
            api.remove_service(service_id)
        except docker.errors.NotFound:  # removed meanwhile (by an operator)
            return self._exit_codes.get(replica.id)
        except docker.errors.APIError as exc:
            raise BackendError(f"cannot stop service of {replica.id}: {_explain(exc)}") from exc
        self._wait_container_gone(replica.handle.get("container_id", ""))
        return code if code is not None else self._exit_codes.get(replica.id)

    def _wait_container_gone(self, container_id: str) -> None:
        """Swarm removes the task's container asynchronously; wait for it, bounded."""
        if not container_id:
            return
        api = self._api
        deadline = time.monotonic() + _REMOVE_WAIT
        while time.monotonic() < deadline:
            try:
                api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            time.sleep(_POLL)

    def _list_objects(self) -> Mapping[str, Mapping[str, Any]]:
        """Tasks of the known replicas' services and this service's containers, by id
        (two list calls)."""
        service_ids = [
            sid for r in list(self._known.values()) if (sid := r.handle.get("service_id"))
        ]
        objects: dict[str, Mapping[str, Any]] = {}
        if service_ids:
            for task in self._api.tasks(filters={"service": service_ids}):
                objects[str(task["ID"])] = task
        labels = [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={self.service_name}"]
        for summary in self._api.containers(all=True, filters={"label": labels}):
            objects[str(summary["Id"])] = summary
        return objects

    def _task_view(self, replica: Replica) -> Mapping[str, Any] | bool | None:
        """The listed task of this replica (see ``EngineBackend._view``); ``None`` when
        gone or no longer the recorded service's."""
        task_id = replica.handle.get("task_id")
        if not task_id:
            return None
        view = self._view(task_id, replica.id)
        if isinstance(view, Mapping) and view.get("ServiceID") != replica.handle.get("service_id"):
            return None
        return view

    def _task(self, replica: Replica) -> dict[str, Any] | None:
        """The replica's task, when it still exists and belongs to the recorded service."""
        task_id = replica.handle.get("task_id")
        if not task_id:
            return None
        try:
            task: dict[str, Any] = self._api.inspect_task(task_id)
        except docker.errors.NotFound:
            return None
        if task.get("ServiceID") != replica.handle.get("service_id"):
            return None
        return task

    def _container(self, replica: Replica, task: Mapping[str, Any]) -> dict[str, Any] | None:
        container_id = _container_id(task) or replica.handle.get("container_id")
        if not container_id:
            return None
        try:
            attrs: dict[str, Any] = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        return attrs

    def _note_exit(self, replica: Replica, task: Mapping[str, Any]) -> None:
        code = _exit_of(task)
        if code is not None:
            self._exit_codes[replica.id] = code

    def _services(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._api.services(
            filters={
                "label": [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={self.service_name}"]
            }
        )
        return found

    def _replica_of_service(self, spec: Mapping[str, Any]) -> Replica | None:
        task = _current_task(self._api.tasks(filters={"service": spec["ID"]}))
        if task is None or _task_state(task) not in _LIVE_STATES:
            return None
        return self._replica_from(spec, task)

    def _is_record_of(self, spec: Mapping[str, Any], replica: Replica) -> bool:
        """Same service (id and creation time) carrying this replica's labels."""
        labels = spec["Spec"].get("Labels") or {}
        return (
            spec["ID"] == replica.handle.get("service_id")
            and spec["CreatedAt"] == replica.handle.get("created")
            and labels.get(LABEL_PROJECT) == self.project
            and labels.get(LABEL_SERVICE) == self.service_name
            and labels.get(LABEL_REPLICA) == replica.id
        )

    def _replica_from(self, spec: Mapping[str, Any], task: Mapping[str, Any]) -> Replica | None:
        """The replica of a task whose container runs with a published port, else None."""
        container_id = _container_id(task)
        if not container_id:
            return None
        try:
            attrs = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        if not attrs["State"].get("Running"):
            return None
        port = _host_port(attrs, self._config.port) or _task_port(task, self._config.port)
        if port is None:
            return None
        labels = spec["Spec"].get("Labels") or {}
        state = attrs["State"]
        return Replica(
            id=labels.get(LABEL_REPLICA, spec["Spec"]["Name"]),
            service=self.service_name,
            host=LOOPBACK,
            port=port,
            state=ReplicaState.STARTING,
            pid=int(state["Pid"]) if state.get("Pid") else None,
            started_at=_epoch(state.get("StartedAt", "")),
            handle={
                "service_id": spec["ID"],
                "created": spec["CreatedAt"],
                "name": spec["Spec"]["Name"],
                "task_id": task["ID"],
                "container_id": container_id,
                "image": self._config.image,
                "log": str(attrs.get("LogPath") or ""),
            },
        )


def _task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "unknown")


def _container_id(task: Mapping[str, Any]) -> str:
    status = task.get("Status") or {}
    return str((status.get("ContainerStatus") or {}).get("ContainerID") or "")


def _exit_of(task: Mapping[str, Any]) -> int | None:
    status = (task.get("Status") or {}).get("ContainerStatus") or {}
    if "ExitCode" not in status or not status.get("ContainerID"):
        return None
    return int(status["ExitCode"])


def _current_task(tasks: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest task of a one-task service (Swarm keeps old ones in its history)."""
    if not tasks:
        return None
    newest = max(
        tasks,
        key=lambda t: (
            t.get("DesiredState") == "running",
            _epoch(str(t.get("CreatedAt", ""))) or 0,
        ),
    )
    return dict(newest)


def _host_port(attrs: Mapping[str, Any], container_port: int) -> int | None:
    """The host port of ``container_port/tcp``; host mode binds 0.0.0.0 and ::."""
    bindings = (attrs["NetworkSettings"].get("Ports") or {}).get(f"{container_port}/tcp") or []
    for binding in bindings:
        if (
            binding.get("HostIp") in (LOOPBACK, "", "0.0.0.0")  # noqa: S104 (read, not bound)
            and str(binding.get("HostPort", "")).isdigit()
        ):
            return int(binding["HostPort"])
    return None


def _task_port(task: Mapping[str, Any], container_port: int) -> int | None:
    ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
    for port in ports:
        if port.get("TargetPort") == container_port and port.get("PublishedPort"):
            return int(port["PublishedPort"])
    return None
