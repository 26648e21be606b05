"""Replicas as Docker containers of a local image (``backend: {kind: docker}``).

Each replica is one container, labelled ``skylift.project``, ``skylift.service``
and ``skylift.replica``, publishing its port on ``127.0.0.1`` with a host port
Docker picks (``-p 127.0.0.1::PORT``); the replica's address is that loopback
port, so HAProxy balances containers exactly like local processes.

A replica is identified by container id *and* creation time, both kept in
``Replica.handle``: after a controller restart only a running container whose
labels, id and creation time all match the record is adopted.

Health: a container whose image (or run) defines a HEALTHCHECK counts as not
alive once Docker reports it ``unhealthy``, so the controller replaces it as it
would a crashed replica (Docker alone never restarts an unhealthy container).
``health()`` exposes the raw status. See docs/docker.md.

The Docker SDK is synchronous: ``start``/``stop`` run it in the backend's own
worker threads; ``is_alive``/``exit_code`` answer from the list of this
service's containers that :meth:`refresh` reads once per tick (see
``backends/container.py``), never with a call of their own on the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

try:
    import docker
    import docker.errors
    import requests
    from docker.types import LogConfig
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the docker backend needs the Docker SDK: pip install 'skylift[docker]'"
    ) from exc

from skylift.backends.base import BackendError, StartFailed
from skylift.backends.container import (
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    EngineBackend,
)
from skylift.backends.ports import LOOPBACK
from skylift.model import Replica, ReplicaState

if TYPE_CHECKING:
    from docker import DockerClient

    from skylift.config.docker import DockerBackend as DockerBackendConfig

_PORT_WAIT = 5.0  # after start, longest wait for Docker to report the published port
_POLL = 0.05
_LOG_TAIL = 20  # log lines quoted when a container exits right at start
_REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
_EXITED = re.compile(r"^Exited \((-?\d+)\)")
# the Engine cannot be asked right now (daemon down or restarting, socket gone)
_UNREACHABLE = (docker.errors.DockerException, requests.exceptions.RequestException, BackendError)

Health = Literal["starting", "healthy", "unhealthy"]


class DockerBackend(EngineBackend):
    """Runs the replicas of one service as containers on this host's Docker Engine.

    No I/O happens here: the client (``client_factory``, default
    ``docker.from_env``, honouring ``DOCKER_HOST``) is created on first use.
    """

    def __init__(
        self,
        service_name: str,
        config: DockerBackendConfig,
        *,
        project: str,
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
        self._config: DockerBackendConfig = config

    # -- the Backend protocol ------------------------------------------------

    async def start(self, service: str, replica_id: str) -> Replica:
        if service != self.service_name:
            raise ValueError(f"this backend runs {self.service_name!r}, not {service!r}")
        if not _REPLICA_ID.match(replica_id):
            raise ValueError(
                f"invalid replica id {replica_id!r}: use letters, digits, '.', '_', '-' "
                "(it names the container)"
            )
        if replica_id in self._known:
            raise ValueError(f"replica {replica_id!r} is already running")
        replica = await self._call("create and start container", self._start_sync, replica_id)
        self._became_known(replica)
        return replica

    async def stop(self, replica: Replica, grace: float) -> int | None:
        """``docker stop`` with ``grace`` (rounded up to whole seconds), then remove it.

        Returns the container's exit code (Docker's: 137 after SIGKILL, 143
        for a SIGTERM the app did not handle), ``None`` when the container is
        not this service's (never stopped) or was already removed.
        """
        try:
            return await self._call("stop and remove container", self._stop_sync, replica, grace)
        finally:
            self._forget(replica.id)

    def is_alive(self, replica: Replica) -> bool:
        """Running and not reported ``unhealthy`` by its own HEALTHCHECK, as of the last
        list of this service's containers (no Engine call here).

        When the list cannot tell (the Engine did not answer, or the replica is newer
        than the list), the answer is True: an unknown state must not make the
        controller replace everything.
        """
        view = self._container_view(replica)
        if view is True:
            return True
        if view is None or view is False:
            return False
        if view.get("State") != "running":
            code = _exit_from_status(str(view.get("Status", "")))
            if code is not None:
                self._exit_codes[replica.id] = code
            return False
        return "(unhealthy)" not in str(view.get("Status", ""))

    def exit_code(self, replica: Replica) -> int | None:
        """Exit code of an exited container (``None`` while it runs or when unknown)."""
        view = self._container_view(replica)
        if isinstance(view, Mapping) and view.get("State") == "running":
            return None
        if isinstance(view, Mapping):
            code = _exit_from_status(str(view.get("Status", "")))
            if code is not None:
                self._exit_codes[replica.id] = code
        return self._exit_codes.get(replica.id)

    def adopt(self, records: Sequence[Replica]) -> list[Replica]:
        """Records whose container still runs with the same id, creation time and labels.

        The port is re-read from Docker (a container restarted by its engine
        may have been given a new host port).
        """
        mine = [r for r in records if r.service == self.service_name]
        if not mine:
            return []
        running = {a["Id"]: a for a in self._list(running_only=True)}
        adopted = []
        for record in mine:
            attrs = running.get(record.handle.get("container_id", ""))
            if attrs is None or not self._is_record_of(attrs, record):
                continue
            replica = dataclasses.replace(record, handle=dict(record.handle))
            port = _host_port(attrs, self._config.port)
            if port is not None:
                replica.port = port
            self._became_known(replica)
            adopted.append(replica)
        return adopted

    def log_path(self, replica: Replica) -> Path:
        """The container's json-file log on the host (``docker logs`` reads it nicely)."""
        return Path(replica.handle.get("log", ""))

    # -- extras for the controller and operators -----------------------------

    def health(self, replica: Replica) -> Health | None:
        """The container's HEALTHCHECK status, ``None`` without one (or when gone)."""
        attrs = self._inspect(replica)
        return None if attrs is None else _health(attrs)

    def find(self) -> list[Replica]:
        """Every running container labelled for this project and service, as replicas.

        Lets the controller spot strays (started, then the controller died
        before recording them) and stop or adopt them deliberately.
        """
        return [self._replica_from(a) for a in self._list(running_only=True)]

    # -- internals -----------------------------------------------------------

    def _start_sync(self, replica_id: str) -> Replica:
        api = self.client.api
        cfg = self._config
        try:
            self.client.images.get(cfg.image)
        except docker.errors.ImageNotFound:
            raise StartFailed(
                f"image {cfg.image!r} of {self.service_name!r} is not in the local Docker "
                "Engine and skylift never pulls: build or `docker load` it first"
            ) from None
        host_config = api.create_host_config(
            port_bindings={cfg.port: (LOOPBACK, None)},  # None: Docker picks the host port
            nano_cpus=round(cfg.cpus * 1e9) if cfg.cpus is not None else None,
            mem_limit=cfg.memory,
            init=cfg.init or None,
            # bounded logs whatever the daemon's default driver: json-file, rotated
            log_config=LogConfig(type=LogConfig.types.JSON, config=self._log_options()),
        )
        env = self._env(replica_id)
        name = self._object_name(replica_id)

        def create() -> str:
            created = api.create_container(
                cfg.image,
                command=self._command(replica_id),
                name=name,
                labels=self._labels(replica_id),
                environment=env,
                ports=[cfg.port],
                host_config=host_config,
                detach=True,
            )
            return str(created["Id"])

        try:
            try:
                container_id = create()
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                self._remove_leftover(name, replica_id)
                container_id = create()
        except docker.errors.APIError as exc:
            raise StartFailed(f"cannot create container {name!r}: {_explain(exc)}") from exc
        try:
            api.start(container_id)
            attrs = self._wait_published(container_id)
        except BaseException as exc:
            with contextlib.suppress(docker.errors.DockerException):
                api.remove_container(container_id, v=True, force=True)
            if isinstance(exc, docker.errors.APIError):
                raise StartFailed(f"cannot start container {name!r}: {_explain(exc)}") from exc
            raise
        return self._replica_from(attrs)

    def _wait_published(self, container_id: str) -> dict[str, Any]:
        """Inspect until Docker reports the host port; StartFailed if the container exits."""
        api = self.client.api
        deadline = time.monotonic() + _PORT_WAIT
        while True:
            attrs: dict[str, Any] = api.inspect_container(container_id)
            if not attrs["State"].get("Running"):
                code = attrs["State"].get("ExitCode")
                logs = api.logs(container_id, tail=_LOG_TAIL).decode(errors="replace").strip()
                raise StartFailed(
                    f"container of {self.service_name!r} exited at once with code {code}"
                    + (f"; last log lines:\n{logs}" if logs else "; it logged nothing")
                    + "\ncheck backend.image, backend.command and backend.port"
                )
            if _host_port(attrs, self._config.port) is not None:
                return attrs
            if time.monotonic() >= deadline:
                raise StartFailed(
                    f"Docker published no host port for {self.service_name!r} port "
                    f"{self._config.port}/tcp within {_PORT_WAIT}s"
                )
            time.sleep(_POLL)

    def _remove_leftover(self, name: str, replica_id: str) -> None:
        """A container with our name exists: remove it only if it is this replica's corpse."""
        api = self.client.api
        try:
            attrs = api.inspect_container(name)
        except docker.errors.NotFound:
            return
        labels = attrs["Config"].get("Labels") or {}
        ours = labels.get(LABEL_SERVICE) == self.service_name and (
            labels.get(LABEL_PROJECT) == self.project and labels.get(LABEL_REPLICA) == replica_id
        )
        if not ours or attrs["State"].get("Running"):
            raise StartFailed(
                f"a container named {name!r} already exists"
                + (" and runs" if attrs["State"].get("Running") else " and is not skylift's")
                + f": remove it (`docker rm -f {name}`) or use another project name"
            )
        api.remove_container(attrs["Id"], v=True, force=True)

    def _stop_sync(self, replica: Replica, grace: float) -> int | None:
        container_id = replica.handle.get("container_id")
        if not container_id:
            return None
        api = self.client.api
        try:
            attrs = api.inspect_container(container_id)
        except docker.errors.NotFound:
            return self._exit_codes.get(replica.id)
        if not self._is_record_of(attrs, replica):
            return None  # not the container this replica started: never touch a stranger
        try:
            if attrs["State"].get("Running"):
                api.stop(container_id, timeout=max(0, math.ceil(grace)))
            code = int(api.inspect_container(container_id)["State"].get("ExitCode", 0))
            self._exit_codes[replica.id] = code
            api.remove_container(container_id, v=True, force=True)
        except docker.errors.NotFound:  # removed meanwhile (by an operator, or --rm)
            return self._exit_codes.get(replica.id)
        except docker.errors.APIError as exc:
            raise BackendError(f"cannot stop container of {replica.id}: {_explain(exc)}") from exc
        return code

    def _list_objects(self) -> Mapping[str, Mapping[str, Any]]:
        """One ``GET /containers/json?all=1`` for this service's labels."""
        found = self.client.api.containers(
            all=True,
            filters={
                "label": [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={self.service_name}"]
            },
        )
        return {str(summary["Id"]): summary for summary in found}

    def _container_view(self, replica: Replica) -> Mapping[str, Any] | bool | None:
        """The listed summary of this replica's container (see ``EngineBackend._view``);
        ``False`` when the listed container carries another replica's labels."""
        container_id = replica.handle.get("container_id")
        if not container_id:
            return None
        view = self._view(container_id, replica.id)
        if not isinstance(view, Mapping):
            return view
        labels = view.get("Labels") or {}
        mine = (
            labels.get(LABEL_PROJECT) == self.project
            and labels.get(LABEL_SERVICE) == self.service_name
            and labels.get(LABEL_REPLICA) == replica.id
        )
        return view if mine else False

    def _inspect(self, replica: Replica) -> dict[str, Any] | None:
        container_id = replica.handle.get("container_id")
        if not container_id:
            return None
        try:
            attrs: dict[str, Any] = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        return attrs if self._is_record_of(attrs, replica) else None

    def _list(self, *, running_only: bool) -> list[dict[str, Any]]:
        """Full inspect data of this service's containers (one list call + one per container)."""
        api = self.client.api
        found = api.containers(
            all=not running_only,
            filters={
                "label": [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={self.service_name}"]
            },
        )
        out = []
        for summary in found:
            with contextlib.suppress(docker.errors.NotFound):  # removed since listed
                out.append(api.inspect_container(summary["Id"]))
        return out

    def _is_record_of(self, attrs: Mapping[str, Any], replica: Replica) -> bool:
        """Same container (id and creation time) carrying this replica's labels."""
        labels = attrs["Config"].get("Labels") or {}
        return (
            attrs["Id"] == replica.handle.get("container_id")
            and attrs["Created"] == replica.handle.get("created")
            and labels.get(LABEL_PROJECT) == self.project
            and labels.get(LABEL_SERVICE) == self.service_name
            and labels.get(LABEL_REPLICA) == replica.id
        )

    def _replica_from(self, attrs: Mapping[str, Any]) -> Replica:
        labels = attrs["Config"].get("Labels") or {}
        state = attrs["State"]
        port = _host_port(attrs, self._config.port)
        return Replica(
            id=labels.get(LABEL_REPLICA, attrs["Name"].lstrip("/")),
            service=self.service_name,
            host=LOOPBACK,
            port=port or 0,
            state=ReplicaState.STARTING,
            pid=int(state["Pid"]) if state.get("Pid") else None,
            started_at=_epoch(state.get("StartedAt", "")),
            handle={
                "container_id": attrs["Id"],
                "created": attrs["Created"],
                "name": attrs["Name"].lstrip("/"),
                "image": str(attrs["Config"].get("Image", "")),
                "log": str(attrs.get("LogPath") or ""),
            },
        )


def _exit_from_status(status: str) -> int | None:
    """The exit code in a container list's ``Status`` ("Exited (137) 3 seconds ago")."""
    match = _EXITED.match(status)
    return int(match.group(1)) if match else None


def _health(attrs: Mapping[str, Any]) -> Health | None:
    status = (attrs["State"].get("Health") or {}).get("Status")
    if status in ("starting", "healthy", "unhealthy"):
        return status  # type: ignore[no-any-return]
    return None


def _host_port(attrs: Mapping[str, Any], container_port: int) -> int | None:
    """The loopback host port Docker gave ``container_port/tcp``."""
    bindings = (attrs["NetworkSettings"].get("Ports") or {}).get(f"{container_port}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") in (LOOPBACK, "") and str(binding.get("HostPort", "")).isdigit():
            return int(binding["HostPort"])
    return None


def _epoch(stamp: str) -> float | None:
    """Docker's RFC 3339 time with nanoseconds -> epoch seconds (None when unset)."""
    if not stamp or stamp.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(
            _FRACTION.sub(r"\1", stamp.replace("Z", "+00:00"))
        ).timestamp()
    except ValueError:
        return None


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)
