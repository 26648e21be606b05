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

Single node (no ``managers`` in config): the published port is reached on
127.0.0.1, so the task must run on this node (the controller's node, a
manager). Multi-node (``managers`` set): task and node state come from the
manager engines (the next one when one does not answer: :class:`_Managers`);
a task is reached on its node's address (config, else the node's Swarm
``Status.Addr``) and the port in the task's ``PortStatus``; container stats,
health, logs and the graceful stop go to the node's own engine (``nodes``),
matched to a Swarm node by the node id that engine reports. A task on a node
that is down or drained counts as gone: the controller replaces it (restart
policy ``none`` stays), and its old service is removed, so nothing counts
twice. ``handle["node"]`` is the task's node id on both.

The Docker SDK is synchronous: ``start``/``stop`` run it in the backend's own
worker threads; ``is_alive``/``exit_code`` answer from the tasks and containers
that :meth:`refresh` lists once per tick (two list calls), never with a call of
their own on the event loop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import docker
    import docker.errors
    import docker.tls
    import docker.types
    import requests
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the swarm backend needs the Docker SDK: pip install 'skylift[docker]'"
    ) from exc

from skylift.backends.base import BackendError, StartFailed
from skylift.backends.container import (
    API_TIMEOUT,
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    EngineBackend,
    EventStream,
)
from skylift.backends.docker import Health, _epoch, _explain, _health
from skylift.backends.ports import LOOPBACK
from skylift.model import Replica, ReplicaState

if TYPE_CHECKING:
    from docker import DockerClient

    from skylift.config.swarm import SwarmBackend as SwarmBackendConfig
    from skylift.config.swarm import SwarmEngine

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
# an engine that does not answer (refused, reset, timed out): try the next manager
_NO_ANSWER = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
_ENGINE_RETRY = 5.0  # seconds before an engine that did not answer is asked again
# node states in which its tasks are gone for skylift ("unknown" is a new leader's
# state for every node until it re-registers: not a loss)
_NODE_GONE_STATES = frozenset({"down", "disconnected"})
_PROBE_VERSION = "1.24"  # any version: only the unversioned /version is called with it
ENGINE_CONNECT_TIMEOUT = 2.0
"""Seconds to connect to an engine (a manager: then the next one is tried)."""
MANAGER_READ_TIMEOUT = 4.0
"""Seconds a manager has to answer before the next one is tried: its calls are small
(lists, inspects, create, remove), and a lost manager must cost less than one refresh
(``REFRESH_TIMEOUT``, 5 s), or the service's loop would skip ticks meanwhile."""
_NODE_CHECK = 1.0  # seconds between checks, while a task starts, that its node is not lost
_NODE_PREFIX = "node:"  # snapshot keys of the nodes listed next to the tasks

log = logging.getLogger(__name__)


def engine_client(
    engine: SwarmEngine,
    base_dir: Path,
    timeout: float = API_TIMEOUT,
    connect_timeout: float | None = None,
) -> DockerClient:
    """A client of one engine: a unix socket, or TCP with mutual TLS (verified).

    The first call (the API version probe) gives up connecting after
    ``ENGINE_CONNECT_TIMEOUT``. ``connect_timeout`` (managers only: their calls never
    add a stop grace to the timeout, which the SDK does for ``stop``) bounds every
    connect of the client the same way, so a manager whose host vanished is given up
    in seconds.
    """
    tls: docker.tls.TLSConfig | bool = False
    if engine.tls is not None:
        tls = docker.tls.TLSConfig(
            client_cert=(str(base_dir / engine.tls.cert), str(base_dir / engine.tls.key)),
            ca_cert=str(base_dir / engine.tls.ca),
            verify=True,
        )
    # requests lets REQUESTS_CA_BUNDLE (and proxy variables) override the session's own
    # CA (psf/requests#3829): an engine is verified against its configured CA only, so
    # trust_env is off, also for the API version probe (done here, not in the SDK's
    # constructor, which would probe with the environment's CA bundle)
    probe = docker.APIClient(
        base_url=engine.engine, tls=tls, timeout=round(timeout), version=_PROBE_VERSION
    )
    try:
        probe.trust_env = False
        probe_api: Any = probe
        probe_api.timeout = (ENGINE_CONNECT_TIMEOUT, timeout)
        version = str(probe.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    client = docker.DockerClient(
        base_url=engine.engine, tls=tls, timeout=round(timeout), version=version
    )
    api: Any = client.api
    api.trust_env = False
    if connect_timeout is not None:
        api.timeout = (connect_timeout, timeout)  # requests' (connect, read)
    return client


class _Managers:
    """The manager engines, tried in order: a call that gets no answer (refused, reset,
    timed out after the client's timeout) or a 503 (this manager lost the quorum) goes
    to the next manager, which then stays current. ``NotFound`` and other API errors
    are answers and are raised as they are."""

    def __init__(self, engines: Sequence[SwarmEngine], base_dir: Path) -> None:
        self._engines = list(engines)
        self._base_dir = base_dir
        self._clients: dict[int, DockerClient] = {}
        self._current = 0
        self._lock = threading.Lock()
        self.failovers = 0

    @property
    def endpoint(self) -> str:
        return self._engines[self._current].engine

    def client(self, index: int | None = None) -> DockerClient:
        with self._lock:
            index = self._current if index is None else index
            if index not in self._clients:
                self._clients[index] = engine_client(
                    self._engines[index],
                    self._base_dir,
                    timeout=MANAGER_READ_TIMEOUT,
                    connect_timeout=ENGINE_CONNECT_TIMEOUT,
                )
            return self._clients[index]

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``APIClient.<name>(*args, **kwargs)`` on the current manager, else the next."""
        first = self._current
        errors: list[str] = []
        for step in range(len(self._engines)):
            index = (first + step) % len(self._engines)
            try:
                api = self.client(index).api
            except (*_NO_ANSWER, docker.errors.DockerException) as exc:  # the version probe
                errors.append(f"{self._engines[index].engine}: {type(exc).__name__}")
                continue
            try:
                result = getattr(api, method)(*args, **kwargs)
            except _NO_ANSWER as exc:
                errors.append(f"{self._engines[index].engine}: {type(exc).__name__}")
            except docker.errors.APIError as exc:
                if exc.status_code != 503:
                    raise
                errors.append(f"{self._engines[index].engine}: {_explain(exc)}")
            else:
                if index != self._current:
                    with self._lock:
                        self._current = index
                        self.failovers += 1
                    log.warning(
                        "Swarm manager failover: now using %s (%s)",
                        self._engines[index].engine,
                        "; ".join(errors),
                    )
                return result
        raise BackendError(
            "no Swarm manager answered (" + "; ".join(errors) + "): check the managers' "
            "engines and the swarm's quorum (`docker node ls` on a manager)"
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


class _MergedEvents:
    """Several engines' events streams read as one: what :class:`EventStream` reads
    (an iterable of decoded events with ``close()``). One reader thread per stream;
    when one stream ends or fails, the whole ends (the consumer subscribes again)."""

    _END = object()

    def __init__(self, streams: Sequence[tuple[str, Any]]) -> None:
        self._streams = list(streams)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._ended: list[str] = []
        for engine, stream in self._streams:
            threading.Thread(
                target=self._pump, args=(engine, stream), name="swarm-events", daemon=True
            ).start()

    def _pump(self, engine: str, stream: Any) -> None:
        try:
            for raw in stream:
                self._queue.put(raw)
            self._ended.append(f"{engine}: closed")
        except Exception as exc:  # handed to the reader below, never swallowed
            self._ended.append(f"{engine}: {exc}")
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._END:
                raise BackendError("events stream of " + "; ".join(self._ended))
            yield item

    def close(self) -> None:
        for _, stream in self._streams:
            with contextlib.suppress(Exception):  # already broken: nothing to close
                stream.close()


class _ManagerAPI:
    """``APIClient``-shaped: each method call goes through :meth:`_Managers.call`."""

    def __init__(self, managers: _Managers) -> None:
        self._managers = managers

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: self._managers.call(name, *args, **kwargs)


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
        self._constraints = list(config.constraints)
        self._multinode = config.multinode
        self._managers = _Managers(config.managers, self._base_dir) if config.multinode else None
        # every configured engine (nodes, then managers), matched to its node id lazily
        self._engines: list[SwarmEngine] = [*config.nodes, *config.managers]
        self._engine_of: dict[str, int] = {}  # node id -> index in _engines
        self._engine_tried: dict[int, float] = {}  # index -> monotonic time of the last ask
        self._engine_known: set[int] = set()  # indices whose node id is known
        self._identifying: concurrent.futures.Future[None] | None = None
        self._node_clients: dict[int, DockerClient] = {}
        self._nodes_lock = threading.Lock()
        self._node_attrs: dict[str, Mapping[str, Any]] = {}  # node id -> last inspect/list

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
        make the controller replace everything. Multi-node: the task's node must not
        be down, disconnected, drained or gone (from the same list); container
        health is Swarm's there (it shuts an unhealthy task down).
        """
        task = self._task_view(replica)
        if task is True:
            return True
        if not isinstance(task, Mapping):
            return False
        if _task_state(task) not in _LIVE_STATES:
            self._note_exit(replica, task)
            return False
        if self._multinode:
            return not self._on_lost_node(task)
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
    def client(self) -> DockerClient:
        """The current manager's client (multi-node), else this node's engine."""
        if self._managers is None:
            return super().client
        try:
            return self._managers.client()
        except docker.errors.DockerException as exc:
            raise BackendError(f"cannot reach the Swarm manager: {exc}") from exc

    @property
    def _api(self) -> Any:
        """The low-level client of the managers (with failover on multi-node); the SDK's
        service and task calls are untyped."""
        if self._managers is not None:
            return _ManagerAPI(self._managers)
        return self.client.api

    def close(self) -> None:
        super().close()
        if self._managers is not None:
            self._managers.close()
        with self._nodes_lock:
            clients, self._node_clients = list(self._node_clients.values()), {}
        for client in clients:
            client.close()

    def dependency(self) -> str:
        if self._managers is None:
            return super().dependency()
        return f"the Swarm manager at {self._managers.endpoint} (list of tasks)"

    @property
    def manager_failovers(self) -> int:
        """How often a call moved to another manager (0 on a single node)."""
        return 0 if self._managers is None else self._managers.failovers

    def stats(self, container_id: str) -> Mapping[str, Any]:
        """Stats read from the engine of the node the container runs on; empty when that
        engine is not configured or does not answer (that replica has no reading)."""
        if not self._multinode:
            return super().stats(container_id)
        node_id = next(
            (
                r.handle.get("node", "")
                for r in list(self._known.values())
                if r.handle.get("container_id") == container_id
            ),
            "",
        )
        api = self._node_api(node_id)
        if api is None:
            return {}
        try:
            return dict(api.stats(container_id, stream=False, one_shot=True))
        except docker.errors.NotFound:
            return {}
        except _NO_ANSWER as exc:
            log.warning(
                "no stats of %s: node %s's engine does not answer (%s)",
                container_id[:12],
                node_id,
                exc,
            )
            return {}

    async def events(self) -> EventStream:
        """Multi-node: deaths and health changes pushed by every node's own engine (one
        stream each, merged; an engine that does not answer is left out, its node's
        deaths are found by the per-tick poll). Single node: this engine's stream."""
        if not self._multinode:
            return await super().events()
        raw = await self._call("events", self._open_node_events)
        return EventStream(raw, self._event_from, self.service_name)

    def _open_node_events(self) -> Any:
        self._identify_engines()
        filters = {
            "type": ["container"],
            "event": ["die", "health_status"],
            "label": [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={self.service_name}"],
        }
        since = int(time.time())
        streams: list[tuple[str, Any]] = []
        for index in sorted(set(self._engine_of.values())):
            engine = self._engines[index].engine
            try:
                api = self._node_client(index).api
                streams.append((engine, api.events(since=since, decode=True, filters=filters)))
            except (*_NO_ANSWER, docker.errors.DockerException) as exc:
                log.warning("no events from %s (polling covers its node): %s", engine, exc)
        if not streams:  # no node engine known or answering: the current manager's own
            api = self.client.api
            streams.append(("manager", api.events(since=since, decode=True, filters=filters)))
        return _MergedEvents(streams)

    # -- each node's own engine ------------------------------------------------------

    def _node_api(self, node_id: str) -> Any | None:
        """The low-level client of ``node_id``'s own engine (single node: this engine);
        ``None`` when no configured engine is that node's."""
        if not self._multinode:
            return self.client.api
        if not node_id:
            return None
        index = self._engine_of.get(node_id)
        if index is None:
            self._identify_engines()
            index = self._engine_of.get(node_id)
        if index is None:
            return None
        return self._node_client(index).api

    def _node_client(self, index: int) -> DockerClient:
        with self._nodes_lock:
            client = self._node_clients.get(index)
        if client is None:  # made outside the lock: its version probe may take seconds
            client = engine_client(self._engines[index], self._base_dir)
            with self._nodes_lock:
                client = self._node_clients.setdefault(index, client)
        return client

    def _identify_engines(self) -> None:
        """Ask each engine whose node is not known yet which node it is (``docker
        info``), each at most once per ``_ENGINE_RETRY`` seconds."""
        now = time.monotonic()
        for index in range(len(self._engines)):
            if index in self._engine_known:
                continue
            if now - self._engine_tried.get(index, -_ENGINE_RETRY) < _ENGINE_RETRY:
                continue
            self._engine_tried[index] = now
            try:
                node_id = str(self._node_client(index).api.info()["Swarm"].get("NodeID") or "")
            except (*_NO_ANSWER, docker.errors.DockerException) as exc:
                log.warning("engine %s does not answer: %s", self._engines[index].engine, exc)
                continue
            self._engine_known.add(index)
            if node_id:
                self._engine_of.setdefault(node_id, index)

    def _identify_in_background(self) -> None:
        """Match the engines to nodes early (from the refresh), in a worker of its own,
        so a node lost before skylift first needed its engine is still known, and a
        dead engine never slows the refresh."""
        if len(self._engine_known) == len(self._engines):
            return
        with self._nodes_lock:
            if self._identifying is not None and not self._identifying.done():
                return
            self._identifying = self._executor.submit(
                self._tracked, "identify node engines", self._identify_engines
            )

    def _node_address(self, node_id: str) -> str | None:
        """Where this node's host-mode ports are reached: the configured ``address`` of
        its engine, else its Swarm ``Status.Addr`` (a manager's advertised address when
        that reads 0.0.0.0)."""
        index = self._engine_of.get(node_id)
        if index is None and any(e.address for e in self._engines):
            self._identify_engines()
            index = self._engine_of.get(node_id)
        if index is not None and self._engines[index].address:
            return self._engines[index].address
        attrs = self._node_attrs.get(node_id)
        if attrs is None:
            try:
                attrs = self._api.inspect_node(node_id)
            except docker.errors.NotFound:
                return None
            self._node_attrs[node_id] = attrs
        addr = str((attrs.get("Status") or {}).get("Addr") or "")
        if addr in ("", "0.0.0.0"):  # noqa: S104 (read, not bound)
            manager = str((attrs.get("ManagerStatus") or {}).get("Addr") or "")
            addr = manager.rpartition(":")[0]
        return addr or None

    def _check_swarm(self) -> None:
        info = self._api.info().get("Swarm") or {}
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
        if not self._multinode:  # multi-node: each node's engine needs it; Swarm says so
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
            placement=docker.types.Placement(constraints=self._constraints)
            if self._constraints
            else None,
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

        failovers = self.manager_failovers
        try:
            try:
                service_id = create()
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                mine = self._created_before_failover(name, replica_id, failovers)
                if mine is not None:
                    service_id = mine
                else:
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
        next_node_check = time.monotonic() + _NODE_CHECK
        last_state = "none"
        while True:
            spec: dict[str, Any] = api.inspect_service(service_id)
            task = _current_task(api.tasks(filters={"service": service_id}))
            if task is not None:
                last_state = _task_state(task)
                if last_state not in _LIVE_STATES:
                    raise StartFailed(self._failure(task, name))
                if self._multinode and time.monotonic() >= next_node_check:
                    next_node_check = time.monotonic() + _NODE_CHECK
                    self._fail_on_lost_node(task, name)
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

    def _fail_on_lost_node(self, task: Mapping[str, Any], name: str) -> None:
        """Swarm assigned the task to a node it has since found down (it was placed
        before the heartbeats ran out): with restart policy none it would wait there."""
        node_id = str(task.get("NodeID") or "")
        if not node_id or _task_state(task) == "running":
            return
        try:
            node = self._api.inspect_node(node_id)
        except docker.errors.NotFound:
            node = {}
        state = str((node.get("Status") or {}).get("State") or "gone")
        if state in _NODE_GONE_STATES or state == "gone":
            raise StartFailed(
                f"the task of Swarm service {name!r} was placed on node {node_id}, which is "
                f"{state}; starting it again elsewhere"
            )

    def _failure(self, task: Mapping[str, Any], name: str) -> str:
        status = task.get("Status") or {}
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
        logs = ""
        api = self._node_api(str(task.get("NodeID") or "")) if container_id else None
        if api is not None:
            # best effort: the error message is complete without the log lines
            with contextlib.suppress(docker.errors.DockerException, *_NO_ANSWER):
                raw = api.logs(container_id, tail=_LOG_TAIL)
                logs = raw.decode(errors="replace").strip()
        reason = status.get("Err") or status.get("Message") or status.get("State")
        return (
            f"the task of Swarm service {name!r} ended at once ({reason}"
            + (f", exit code {code}" if container_id else "")
            + ")"
            + (f"; last log lines:\n{logs}" if logs else "")
            + "\ncheck backend.image, backend.command and backend.port"
        )

    def _created_before_failover(self, name: str, replica_id: str, failovers: int) -> str | None:
        """The id of the service this very start created, when the manager that took the
        create stopped answering before its reply (the call then went to the next one,
        which says 409): same name and this replica's labels. ``None`` otherwise."""
        if self.manager_failovers == failovers:
            return None
        try:
            spec = self._api.inspect_service(name)
        except docker.errors.NotFound:
            return None
        labels = spec["Spec"].get("Labels") or {}
        ours = (
            labels.get(LABEL_PROJECT) == self.project
            and labels.get(LABEL_SERVICE) == self.service_name
            and labels.get(LABEL_REPLICA) == replica_id
        )
        return str(spec["ID"]) if ours else None

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
            node = self._node_api(replica.handle.get("node", "")) if container_id else None
            if node is not None:
                code = self._stop_container(node, replica, container_id, grace)
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
        self._wait_container_gone(replica)
        return code if code is not None else self._exit_codes.get(replica.id)

    def _stop_container(
        self, api: Any, replica: Replica, container_id: str, grace: float
    ) -> int | None:
        """Stop the task's container on its node's engine; ``None`` when it is gone or
        the engine does not answer (a lost node: removing the service is all we can do)."""
        try:
            attrs = api.inspect_container(container_id)
            if attrs["State"].get("Running"):
                api.stop(container_id, timeout=max(0, math.ceil(grace)))
            return int(api.inspect_container(container_id)["State"].get("ExitCode", 0))
        except docker.errors.NotFound:
            return None
        except _NO_ANSWER as exc:
            log.warning(
                "cannot stop %s's container on node %s (%s): removing its service only",
                replica.id,
                replica.handle.get("node", "?"),
                type(exc).__name__,
            )
            return None

    def _wait_container_gone(self, replica: Replica) -> None:
        """Swarm removes the task's container asynchronously; wait for it, bounded (not
        when its node's engine is unknown or does not answer)."""
        container_id = replica.handle.get("container_id", "")
        api = self._node_api(replica.handle.get("node", "")) if container_id else None
        if api is None:
            return
        deadline = time.monotonic() + _REMOVE_WAIT
        while time.monotonic() < deadline:
            try:
                api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            except _NO_ANSWER:
                return
            time.sleep(_POLL)

    def _list_objects(self) -> Mapping[str, Mapping[str, Any]]:
        """Tasks of the known replicas' services and this service's containers, by id
        (two list calls)."""
        service_ids = [
            sid for r in list(self._known.values()) if (sid := r.handle.get("service_id"))
        ]
        objects: dict[str, Mapping[str, Any]] = {}
        for task in self._tasks_of(service_ids):
            objects[str(task["ID"])] = task
        if self._multinode:
            # task health is Swarm's (it shuts an unhealthy task down); the node list tells
            # which tasks sit on a lost or drained node. No call to the nodes' engines.
            for node in self._api.nodes():
                self._node_attrs[str(node["ID"])] = node
                objects[_NODE_PREFIX + str(node["ID"])] = node
            self._identify_in_background()
            return objects
        labels = [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={self.service_name}"]
        for summary in self._api.containers(all=True, filters={"label": labels}):
            objects[str(summary["Id"])] = summary
        return objects

    def _tasks_of(self, service_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Tasks of these services. The Engine answers 404 to the whole list when one of
        them was just removed (a replica stopping): then list again without the gone."""
        if not service_ids:
            return []
        try:
            tasks: list[dict[str, Any]] = self._api.tasks(filters={"service": list(service_ids)})
        except docker.errors.NotFound:
            existing = {str(s["ID"]) for s in self._services()}
            left = [sid for sid in service_ids if sid in existing]
            if not left:
                return []
            tasks = self._api.tasks(filters={"service": left})
        return tasks

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

    def _on_lost_node(self, task: Mapping[str, Any]) -> bool:
        """The task's node is down, disconnected, drained or no longer in the swarm (as
        the snapshot that listed the task saw it); a task not yet assigned is not."""
        node_id = str(task.get("NodeID") or "")
        snapshot = self._snapshot
        if not node_id or snapshot is None:
            return False
        node = snapshot.objects.get(_NODE_PREFIX + node_id)
        if node is None:
            return True
        state = str((node.get("Status") or {}).get("State") or "")
        availability = str((node.get("Spec") or {}).get("Availability") or "")
        return state in _NODE_GONE_STATES or availability == "drain"

    def lost_node(self, replica: Replica) -> bool:
        """The replica's task is on a lost or drained node (from the last snapshot).

        Single-node: never (the snapshot lists no nodes, and the node is this host).
        """
        if not self._multinode:
            return False
        task = self._task_view(replica)
        return isinstance(task, Mapping) and self._on_lost_node(task)

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
        api = self._node_api(str(task.get("NodeID") or replica.handle.get("node", "")))
        if not container_id or api is None:
            return None
        try:
            attrs: dict[str, Any] = api.inspect_container(container_id)
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
        if self._multinode:
            return self._remote_replica_from(spec, task, container_id)
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
            handle=self._handle(
                spec,
                task,
                container_id,
                str(attrs.get("LogPath") or ""),
                str(task.get("NodeID") or ""),
            ),
        )

    def _remote_replica_from(
        self, spec: Mapping[str, Any], task: Mapping[str, Any], container_id: str
    ) -> Replica | None:
        """Multi-node: everything from the manager's task (state, node, port, PID), the
        address from the node; no call to the node's own engine."""
        if _task_state(task) != "running":
            return None
        port = _task_port(task, self._config.port)
        node_id = str(task.get("NodeID") or "")
        host = self._node_address(node_id) if node_id else None
        if port is None or host is None:
            return None
        labels = spec["Spec"].get("Labels") or {}
        status = task.get("Status") or {}
        pid = (status.get("ContainerStatus") or {}).get("PID")
        return Replica(
            id=labels.get(LABEL_REPLICA, spec["Spec"]["Name"]),
            service=self.service_name,
            host=host,
            port=port,
            state=ReplicaState.STARTING,
            pid=int(pid) if pid else None,
            started_at=_epoch(str(status.get("Timestamp") or "")),
            # the log is on the node: `docker service logs <name>` on a manager reads it
            handle=self._handle(spec, task, container_id, "", node_id),
        )

    def _handle(
        self,
        spec: Mapping[str, Any],
        task: Mapping[str, Any],
        container_id: str,
        log_path: str,
        node_id: str,
    ) -> dict[str, str]:
        """What identifies a replica's service, task and container (kept in the store)."""
        return {
            "service_id": spec["ID"],
            "created": spec["CreatedAt"],
            "name": spec["Spec"]["Name"],
            "task_id": task["ID"],
            "container_id": container_id,
            "image": self._config.image,
            "log": log_path,
            "node": node_id,
        }


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
