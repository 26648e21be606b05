"""Replicas as the pods of one Kubernetes Deployment (``backend: {kind: kubernetes}``).

The controller's Backend protocol is per replica: it starts one replica with an id
and later stops exactly the one it drained. A Deployment is scaled by a count, so:

- **start** claims a live pod of the Deployment that no replica owns (the
  ReplicaSet's replacement of a pod that died), or else raises ``spec.replicas`` by
  one through the ``scale`` subresource (``autoscaling/v1`` Scale, PUT with the
  ``resourceVersion`` just read; a 409 is read again and retried) and claims the new
  pod. Claiming = a merge patch of the pod's annotations (``skylift/replica``,
  ``skylift/project``, ``skylift/service``) carrying its ``resourceVersion``. It
  returns once the pod's ``Ready`` condition is True; the replica's address is the
  pod IP and its container port (the one named ``port_name``, else ``port``).
- **stop** marks the drained pod with ``controller.kubernetes.io/pod-deletion-cost:
  "-2147483648"`` and lowers ``spec.replicas`` by one: the ReplicaSet removes the pod
  with the lowest cost among equally ranked ones. Caveat (Kubernetes' own): the cost
  is best effort; the ReplicaSet first removes pods that are unscheduled, pending or
  not ready, so with such a pod around it removes that one instead. Then this backend
  deletes the drained pod itself (the ReplicaSet creates a replacement, which the
  next start claims). A pod that already died is deleted, the count untouched.
  The pod's own ``terminationGracePeriodSeconds`` applies, not the ``grace`` argument.
- **is_alive** answers from the pods :meth:`refresh` listed (label selector of the
  Deployment) once per tick; **adopt** lists them again: a pod annotated for this
  project and service is adopted (its record matched by name and uid, or without a
  record: in Kubernetes the Deployment is the record).

Leader election: with a Lease (see :mod:`skylift.backends.kubernetes_lease`),
``refresh`` renews it every tick and raises :class:`NotLeader` while another
controller holds it, so this service's loop waits; ``start``/``stop`` refuse unless
the lease is trusted now.

Every call is bounded by ``backend.timeout`` (the client's timeout, and
``asyncio.timeout`` around each step). ``adopt`` is synchronous (the controller runs
it in a thread), so it uses lightkube's sync client.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

try:
    import httpx2
    from lightkube import ApiError, AsyncClient, Client, KubeConfig
    from lightkube.config.models import Cluster, User
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.core_v1 import Pod
    from lightkube.types import PatchType
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the kubernetes backend needs lightkube: pip install 'skylift[kubernetes]'"
    ) from exc

from skylift.backends.base import BackendError, StartFailed
from skylift.backends.kubernetes_advisor import advisor_hpa, write_hpa
from skylift.backends.kubernetes_lease import KubernetesLease
from skylift.config.kubernetes import KubernetesBackend as KubernetesBackendConfig
from skylift.config.root import SkyliftConfig
from skylift.model import Replica, ReplicaState

ANNOTATION_REPLICA = "skylift/replica"
ANNOTATION_PROJECT = "skylift/project"
ANNOTATION_SERVICE = "skylift/service"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
LOWEST_COST = str(-(2**31))
"""The lowest pod-deletion-cost (int32): this pod goes first among equally ranked ones."""
START_WAIT = 60.0  # seconds from scale-up to the claimed pod's Ready condition
STOP_WAIT = 60.0  # seconds a stop waits for the pod object to go (plus its grace)
SCALE_RETRIES = 5  # 409 Conflicts on the Scale before giving up
SNAPSHOT_STALE = 30.0
_POLL = 0.2
_REPLICA_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_UNREACHABLE = (ApiError, httpx2.HTTPError, TimeoutError, OSError)

T = TypeVar("T")


class NotLeader(BackendError):
    """Another controller holds the Lease: this one acts on nothing until it is free."""


def default_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pod_live(pod: Pod) -> bool:
    """Scheduled or running, not being deleted, its container not terminated."""
    meta, status = pod.metadata, pod.status
    if meta is None or meta.deletionTimestamp is not None:
        return False
    if status is None:
        return True
    if status.phase in ("Failed", "Succeeded"):
        return False
    return not any(
        cs.state is not None and cs.state.terminated is not None
        for cs in status.containerStatuses or []
    )


def pod_ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def pod_exit_code(pod: Pod) -> int | None:
    for cs in (pod.status.containerStatuses if pod.status else None) or []:
        if cs.state is not None and cs.state.terminated is not None:
            return int(cs.state.terminated.exitCode)
    return None


def pod_port(pod: Pod, name: str, default: int) -> int:
    """The container port named ``name``, else ``default`` (the config's ``port``)."""
    for container in (pod.spec.containers if pod.spec else None) or []:
        for port in container.ports or []:
            if port.name == name:
                return int(port.containerPort)
    return default


def pod_annotations(pod: Pod) -> Mapping[str, str]:
    return (pod.metadata.annotations if pod.metadata else None) or {}


def _epoch(at: datetime.datetime | None) -> float | None:
    return at.timestamp() if at is not None else None


class KubernetesBackend:
    """Runs the replicas of one service as the pods of one Deployment.

    No I/O happens here: the clients are built on first use (``client_factory`` and
    ``sync_client_factory`` replace them in tests).
    """

    def __init__(
        self,
        service_name: str,
        config: KubernetesBackendConfig,
        *,
        project: str,
        identity: str | None = None,
        base_dir: Path | None = None,
        client_factory: Callable[[], AsyncClient] | None = None,
        sync_client_factory: Callable[[], Client] | None = None,
        hpa: Mapping[str, Any] | None = None,
    ) -> None:
        self.service_name = service_name
        self.project = project
        self.config = config
        self.namespace = config.namespace
        self.deployment = config.deployment_name(service_name)
        self.identity = identity or default_identity()
        self._base_dir = base_dir or Path.cwd()
        self._client_factory = client_factory
        self._sync_client_factory = sync_client_factory
        self._client: AsyncClient | None = None
        self._lease: KubernetesLease | None = None
        self._selector: dict[str, str] | None = None
        self._known: dict[str, Replica] = {}
        self._pods: dict[str, Pod] | None = None  # pod name -> pod, from the last refresh
        self._pods_taken = float("-inf")  # monotonic, when that list was asked for
        self._exit_codes: dict[str, int] = {}
        self._claimed_at: dict[str, float] = {}  # replica id -> monotonic, start's begin
        self._scale_lock = asyncio.Lock()
        self.hpa = hpa  # advisor mode: the HPA written while this controller leads
        self._hpa_written = False

    # -- clients ------------------------------------------------------------

    def _kubeconfig(self) -> KubeConfig:
        cfg = self.config
        if cfg.kubeconfig is not None:
            return KubeConfig.from_file(self._base_dir / cfg.kubeconfig)
        assert cfg.api_server is not None  # the config's validator says one of both
        ca = str(self._base_dir / cfg.ca_file) if cfg.ca_file else None
        # lightkube wants a user even without credentials (an apiserver behind a proxy)
        user = User(token_file=str(self._base_dir / cfg.token_file)) if cfg.token_file else User()
        return KubeConfig.from_one(
            cluster=Cluster(server=cfg.api_server, certificate_auth=ca),
            user=user,
            namespace=self.namespace,
        )

    async def client(self) -> AsyncClient:
        if self._client is None:
            if self._client_factory is not None:
                self._client = self._client_factory()
            else:
                kubeconfig = await asyncio.to_thread(self._kubeconfig)  # reads files
                self._client = AsyncClient(
                    kubeconfig,
                    namespace=self.namespace,
                    timeout=httpx2.Timeout(self.config.timeout),
                    field_manager="skylift",
                    trust_env=False,
                )
            self._lease = KubernetesLease(
                self._client,
                self.config.lease_name(self.service_name),
                self.namespace,
                self.identity,
                self.config.lease_duration,
            )
        return self._client

    def _sync_client(self) -> Client:
        if self._sync_client_factory is not None:
            return self._sync_client_factory()
        return Client(
            self._kubeconfig(),
            namespace=self.namespace,
            timeout=httpx2.Timeout(self.config.timeout),
            field_manager="skylift",
            trust_env=False,
        )

    async def _bounded(
        self, what: str, call: Callable[[], Awaitable[T]], within: float | None = None
    ) -> T:
        """One apiserver step, at most ``within`` (default ``backend.timeout``; each of
        its calls has that client timeout too); errors become BackendError."""
        within = within if within is not None else self.config.timeout
        try:
            async with asyncio.timeout(within):
                return await call()
        except ApiError as exc:
            raise BackendError(
                f"{what}: the apiserver answered {exc.status.code} ({exc.status.message})"
            ) from exc
        except (httpx2.HTTPError, TimeoutError, OSError) as exc:
            raise BackendError(
                f"{what}: not done within {within:g}s ({type(exc).__name__}: {exc})"
            ) from exc

    # -- the Refreshable protocol ------------------------------------------

    def dependency(self) -> str:
        return f"the Kubernetes apiserver (Deployment {self.namespace}/{self.deployment})"

    async def refresh(self) -> None:
        """Renew (or wait for) the Lease, then list the Deployment's pods (two or three calls)."""
        client = await self.client()
        lease = self._lease
        assert lease is not None
        held = await self._bounded(f"renew {lease.describe()}", lease.step)
        taken = time.monotonic()
        pods = await self._bounded("list pods", self._list_pods)
        self._pods = {p.metadata.name: p for p in pods if p.metadata and p.metadata.name}
        self._pods_taken = taken
        if held and self.hpa is not None and not self._hpa_written:
            manifest = self.hpa
            await self._bounded("write the HPA", lambda: write_hpa(client, manifest))
            self._hpa_written = True
        self._hpa_written = self._hpa_written and held
        if not held:
            raise NotLeader(
                f"standby: {lease.describe()} is held by {lease.holder!r}; this controller "
                "acts when that holder stops renewing it"
            )

    async def _selector_labels(self) -> dict[str, str]:
        if self._selector is None:
            client = await self.client()
            deployment = await client.get(Deployment, self.deployment, namespace=self.namespace)
            match = (
                deployment.spec.selector.matchLabels
                if deployment.spec and deployment.spec.selector
                else None
            )
            if not match:
                raise BackendError(
                    f"Deployment {self.namespace}/{self.deployment} has no "
                    "spec.selector.matchLabels (matchExpressions are not supported)"
                )
            self._selector = dict(match)
        return self._selector

    async def _list_pods(self) -> list[Pod]:
        labels = await self._selector_labels()
        client = await self.client()
        selector: dict[str, Any] = dict(labels)
        return [p async for p in client.list(Pod, namespace=self.namespace, labels=selector)]

    # -- the Backend protocol -----------------------------------------------

    async def _require_leader(self) -> None:
        """Act only while the Lease is trusted. When it is not (the controller's loop
        always renews first, so: `skylift down` with no controller running), take part
        in the election for up to 1.5 lease durations: a crashed holder's Lease is
        taken over once its record stood still for a whole duration."""
        await self.client()
        lease = self._lease
        assert lease is not None
        deadline = time.monotonic() + 1.5 * self.config.lease_duration
        while not lease.trusted() and time.monotonic() < deadline:
            if not await self._bounded(f"renew {lease.describe()}", lease.step):
                await asyncio.sleep(min(1.0, self.config.lease_duration / 4))
        if not lease.trusted():
            holder = lease.holder
            raise NotLeader(
                f"not the leader of Lease {self.namespace}/"
                f"{self.config.lease_name(self.service_name)}"
                + (f" (held by {holder!r})" if holder else "")
                + ": only the holder scales the Deployment"
            )

    async def start(self, service: str, replica_id: str) -> Replica:
        """Claim a pod for ``replica_id`` (scaling the Deployment up by one if none is
        free) and return once it is Ready. Raises :class:`StartFailed` when the pod does
        not become Ready within START_WAIT or dies."""
        if service != self.service_name:
            raise ValueError(f"this backend runs {self.service_name!r}, not {service!r}")
        if not _REPLICA_ID.match(replica_id):
            raise ValueError(
                f"invalid replica id {replica_id!r}: letters, digits, '-', '_', '.' "
                "(it is a pod annotation value)"
            )
        if replica_id in self._known:
            raise ValueError(f"replica {replica_id!r} is already running")
        await self._require_leader()
        claimed_at = time.monotonic()  # a list asked for before this cannot show the pod
        async with self._scale_lock:
            pod = await self._bounded(
                "claim a pod", lambda: self._claim(replica_id), START_WAIT + self.config.timeout
            )
        name = pod.metadata.name if pod.metadata and pod.metadata.name else ""
        pod = await self._wait_ready(name)
        replica = self._replica_of(pod, replica_id)
        self._known[replica_id] = replica
        self._claimed_at[replica_id] = claimed_at
        return replica

    async def _claim(self, replica_id: str) -> Pod:
        client = await self.client()
        pods = await self._list_pods()
        free = self._free(pods)
        if not free and self.config.mode == "advisor":
            raise StartFailed(
                f"backend.mode is advisor: the HPA sets the count of Deployment "
                f"{self.namespace}/{self.deployment} and no pod of it is free to claim"
            )
        if not free:
            await self._scale_by(+1)
            deadline = time.monotonic() + START_WAIT
            while not free:
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"Deployment {self.namespace}/{self.deployment} was scaled up but "
                        f"no new pod appeared within {START_WAIT:g}s (quota? see "
                        f"`kubectl describe deployment {self.deployment}`)"
                    )
                await asyncio.sleep(_POLL)
                free = self._free(await self._list_pods())
        pod = max(free, key=lambda p: (p.metadata.creationTimestamp, p.metadata.name))  # type: ignore[union-attr]
        meta = pod.metadata
        assert meta is not None and meta.name is not None
        patch = {
            "metadata": {
                "resourceVersion": meta.resourceVersion,
                "annotations": {
                    ANNOTATION_REPLICA: replica_id,
                    ANNOTATION_PROJECT: self.project,
                    ANNOTATION_SERVICE: self.service_name,
                },
            }
        }
        claimed: Pod = await client.patch(
            Pod, meta.name, patch, namespace=self.namespace, patch_type=PatchType.MERGE
        )
        return claimed

    def _free(self, pods: Sequence[Pod]) -> list[Pod]:
        """Live pods nobody claimed (no skylift annotation, not one of ours)."""
        owned = {r.handle.get("pod") for r in self._known.values()}
        return [
            p
            for p in pods
            if pod_live(p)
            and p.metadata is not None
            and p.metadata.name not in owned
            and ANNOTATION_REPLICA not in pod_annotations(p)
        ]

    async def _scale_by(self, delta: int) -> int:
        """Read the Scale and PUT it back changed by ``delta`` (409: read again, retry)."""
        client = await self.client()
        for _ in range(SCALE_RETRIES):
            scale = await client.get(Deployment.Scale, self.deployment, namespace=self.namespace)
            assert scale.spec is not None
            scale.spec.replicas = max(0, (scale.spec.replicas or 0) + delta)
            try:
                await client.replace(scale, self.deployment, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code == 409:
                    continue  # another writer changed the Deployment: read it again
                raise
            return scale.spec.replicas
        raise BackendError(
            f"the Scale of Deployment {self.namespace}/{self.deployment} kept changing "
            f"({SCALE_RETRIES} conflicts in a row); retrying next tick"
        )

    async def _wait_ready(self, name: str) -> Pod:
        client = await self.client()
        deadline = time.monotonic() + START_WAIT
        while True:
            pod = await self._bounded(
                f"read pod {name}", lambda: client.get(Pod, name, namespace=self.namespace)
            )
            if not pod_live(pod):
                raise StartFailed(
                    f"pod {self.namespace}/{name} ended before it was Ready (exit code "
                    f"{pod_exit_code(pod)}); see `kubectl logs {name}`"
                )
            if pod_ready(pod) and pod.status is not None and pod.status.podIP:
                return pod
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"pod {self.namespace}/{name} was not Ready within {START_WAIT:g}s; see "
                    f"`kubectl describe pod {name}`"
                )
            await asyncio.sleep(_POLL)

    def _replica_of(self, pod: Pod, replica_id: str) -> Replica:
        meta, status = pod.metadata, pod.status
        assert meta is not None and status is not None
        return Replica(
            id=replica_id,
            service=self.service_name,
            host=status.podIP or "",
            port=pod_port(pod, self.config.port_name, self.config.port),
            state=ReplicaState.STARTING,
            started_at=_epoch(status.startTime),
            handle={
                "pod": meta.name or "",
                "uid": meta.uid or "",
                "namespace": self.namespace,
                "deployment": self.deployment,
            },
        )

    async def stop(self, replica: Replica, grace: float) -> int | None:
        """Remove exactly this replica's pod (see the module docstring for how)."""
        await self._require_leader()
        try:
            async with self._scale_lock:
                return await self._bounded(
                    f"stop pod {replica.handle.get('pod')}",
                    lambda: self._stop(replica),
                    6 * self.config.timeout,  # read, mark, scale (maybe retried), wait, delete
                )
        finally:
            self._known.pop(replica.id, None)
            self._claimed_at.pop(replica.id, None)

    async def _stop(self, replica: Replica) -> int | None:
        client = await self.client()
        name = replica.handle.get("pod", "")
        try:
            pod = await client.get(Pod, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return self._exit_codes.get(replica.id)
            raise
        if pod.metadata is None or pod.metadata.uid != replica.handle.get("uid"):
            return None  # another pod by that name: never touch a stranger
        code = pod_exit_code(pod)
        if pod_live(pod) and self.config.mode == "scale":
            patch = {"metadata": {"annotations": {DELETION_COST: LOWEST_COST}}}
            await client.patch(
                Pod, name, patch, namespace=self.namespace, patch_type=PatchType.MERGE
            )
            await self._scale_by(-1)
            marked = await self._wait_marked(name, replica.handle.get("uid", ""))
            if not marked:  # the ReplicaSet removed another pod (see the caveat)
                with contextlib.suppress(ApiError):
                    await client.delete(Pod, name, namespace=self.namespace)
        elif pod.metadata.deletionTimestamp is None:
            with contextlib.suppress(ApiError):
                await client.delete(Pod, name, namespace=self.namespace)
        if code is not None:
            self._exit_codes[replica.id] = code
        return code

    async def _wait_marked(self, name: str, uid: str) -> bool:
        """True once the ReplicaSet deletes this pod (deletionTimestamp set, or gone)."""
        client = await self.client()
        deadline = time.monotonic() + self.config.timeout / 2
        while time.monotonic() < deadline:
            try:
                pod = await client.get(Pod, name, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code == 404:
                    return True
                raise
            if pod.metadata is None or pod.metadata.uid != uid:
                return True
            if pod.metadata.deletionTimestamp is not None:
                return True
            await asyncio.sleep(_POLL)
        return False

    def is_alive(self, replica: Replica) -> bool:
        """The pod is listed, live and the same (uid); unknown (no fresh list) = alive."""
        pods = self._pods
        if pods is None or time.monotonic() - self._pods_taken > SNAPSHOT_STALE:
            return True
        pod = pods.get(replica.handle.get("pod", ""))
        if pod is None or pod.metadata is None or pod.metadata.uid != replica.handle.get("uid"):
            # claimed after the list was asked for: not in it yet
            return self._claimed_at.get(replica.id, float("-inf")) > self._pods_taken
        if not pod_live(pod):
            code = pod_exit_code(pod)
            if code is not None:
                self._exit_codes[replica.id] = code
            return False
        return True

    def exit_code(self, replica: Replica) -> int | None:
        """The container's exit code when the listed pod shows it terminated."""
        pod = (self._pods or {}).get(replica.handle.get("pod", ""))
        if pod is not None and pod.metadata and pod.metadata.uid == replica.handle.get("uid"):
            code = pod_exit_code(pod)
            if code is not None:
                self._exit_codes[replica.id] = code
        return self._exit_codes.get(replica.id)

    def adopt(self, records: Sequence[Replica]) -> list[Replica]:
        """Pods of the Deployment annotated for this project and service that still live:
        matched to their records by pod name and uid, or adopted without a record.
        Blocking (the controller runs it in a thread)."""
        client = self._sync_client()
        try:
            deployment = client.get(Deployment, self.deployment, namespace=self.namespace)
            match = deployment.spec.selector.matchLabels if deployment.spec else None
            selector: dict[str, Any] = dict(match or {})
            pods = list(client.list(Pod, namespace=self.namespace, labels=selector))
        except _UNREACHABLE as exc:
            raise BackendError(f"adopt: cannot list pods of {self.deployment}: {exc}") from exc
        finally:
            client.close()
        by_id = {r.id: r for r in records if r.service == self.service_name}
        adopted = []
        for pod in pods:
            notes = pod_annotations(pod)
            replica_id = notes.get(ANNOTATION_REPLICA)
            if (
                not replica_id
                or notes.get(ANNOTATION_PROJECT) != self.project
                or notes.get(ANNOTATION_SERVICE) != self.service_name
                or not pod_live(pod)
                or pod.status is None
                or not pod.status.podIP
            ):
                continue
            found = self._replica_of(pod, replica_id)
            record = by_id.get(replica_id)
            if record is not None:
                if record.handle.get("uid") != found.handle["uid"]:
                    continue  # the record names another pod: not provably this one
                found.state = record.state
            self._known[replica_id] = found
            adopted.append(found)
        return adopted

    def log_path(self, replica: Replica) -> Path:
        """Pods log to the node (``kubectl logs <pod>``); there is no local file."""
        return Path(os.devnull)

    # -- extras ----------------------------------------------------------------

    def known(self) -> Mapping[str, Replica]:
        return dict(self._known)

    def snapshot(self) -> Mapping[str, Any]:
        """Pod name -> phase as last listed (for tests and `explain`)."""
        return {
            name: (pod.status.phase if pod.status else None)
            for name, pod in (self._pods or {}).items()
        }


def advisor_manifest(config: SkyliftConfig, service: str) -> dict[str, Any] | None:
    """The HPA a service in ``mode: advisor`` has skylift write; None in ``mode: scale``."""
    backend = config.services[service].backend
    if not isinstance(backend, KubernetesBackendConfig) or backend.mode != "advisor":
        return None
    return advisor_hpa(config, service, backend.deployment_name(service), backend.namespace)
