"""A Kubernetes API *emulator* for tests: the subset skylift's kubernetes backend uses.

No real control plane can be installed here (no registry ships kube-apiserver), so
this server speaks the apiserver's HTTP API for the calls docs/kubernetes.md lists,
and a fake kubelet + ReplicaSet loop runs each pod as a real local process.

Why not kmock: kmock 0.8's ``KubernetesEmulator`` keeps objects in memory but lists
answer ``resourceVersion: '...'``, an update never conflicts (409 only on creating an
existing name), lists ignore ``labelSelector`` and there are no subresources (the
Deployment's ``scale``) and no kubelet; all of that would be written on top of its
private ``kmock._internal`` classes. Starlette (already a dependency) is the base.

What it implements, the way a real apiserver does:
- ``metadata.resourceVersion`` on every object (one global counter, like etcd's
  revision) and on lists; an update (PUT) carrying a stale ``resourceVersion``
  answers 409 Conflict with a ``Status`` body; create of an existing name 409.
- ``labelSelector`` on list (equality terms ``k=v``, ``k!=v``, comma = and).
- apps/v1 Deployments and their ``scale`` subresource (autoscaling/v1 ``Scale``).
- Pods: list, get, merge-patch (annotations), delete.
- coordination.k8s.io/v1 Leases and autoscaling/v2 HorizontalPodAutoscalers: CRUD.
- Every object received and every object answered is validated with
  ``kubernetes-validate --strict`` (schema of Kubernetes 1.33): a request a real
  apiserver would refuse answers 422 here too, and a drifting answer fails loudly.

Emulator liberties (documented in docs/kubernetes.md):
- A pod is a local process (the container's ``command`` + ``args``, with ``$(VAR)``
  expanded from its ``env``, ``fieldRef: metadata.name`` supported) on 127.0.0.1;
  each pod gets its own free port: the container port named ``http`` and the env
  variable ``PORT`` are rewritten to it (pods of a real cluster share the port and
  differ by IP).
- The Ready condition flips once the readinessProbe's ``httpGet`` path answers 200.
- Scale-down picks victims like the ReplicaSet controller's ranking, reduced to what
  can differ here: not-ready before ready, then lower
  ``controller.kubernetes.io/pod-deletion-cost`` first, then the newest first.
- No watch, no ReplicaSet objects, no ownerReferences, no admission, one namespace
  store per namespace name with no Namespace objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.ports import free_port

KUBERNETES_VERSION = "1.33"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
KUBELET_EVERY = 0.1  # seconds between kubelet/ReplicaSet passes
PROBE_TIMEOUT = 1.0
POD_MARK = "K8S_EMULATOR_POD"
"""Environment variable every pod process carries (its pod's uid)."""

Obj = dict[str, Any]


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate(obj: Mapping[str, Any]) -> str | None:
    """The schema error a real apiserver would give, or None."""
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        return f"{path or '(root)'}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return f"no schema: {exc.message}"
    return None


def status(code: int, reason: str, message: str) -> JSONResponse:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return JSONResponse(body, status_code=code)


def parse_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Equality-based label selector (``a=b,c!=d``, ``==`` too); set-based terms refused."""
    terms: list[tuple[str, str, bool]] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(r"([A-Za-z0-9._/-]+)\s*(!=|==|=)\s*([A-Za-z0-9._-]*)", raw)
        if match is None:
            raise ValueError(f"unsupported selector term {raw!r} (emulator: equality only)")
        terms.append((match[1], match[3], match[2] != "!="))

    def matches(labels: Mapping[str, str]) -> bool:
        return all((labels.get(k) == v) == eq for k, v, eq in terms)

    return matches


@dataclass
class PodRun:
    """The local process standing in for one pod's container."""

    process: subprocess.Popen[bytes]
    port: int
    ready: bool = False


@dataclass
class Kind:
    """One resource type: where it lives in the URL space and its kind name."""

    group_version: str  # "v1", "apps/v1"
    plural: str
    kind: str


PODS = Kind("v1", "pods", "Pod")
DEPLOYMENTS = Kind("apps/v1", "deployments", "Deployment")
LEASES = Kind("coordination.k8s.io/v1", "leases", "Lease")
HPAS = Kind("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
KINDS = {k.plural: k for k in (PODS, DEPLOYMENTS, LEASES, HPAS)}


@dataclass
class Emulator:
    """The objects (by plural, namespace, name), the revision counter and the pods' processes."""

    token: str | None = None
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    revision: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    runs: dict[str, PodRun] = field(default_factory=dict)  # pod uid -> process
    calls: list[str] = field(default_factory=list)  # "VERB path" of every request, for tests
    invalid: list[str] = field(default_factory=list)  # answers that failed validation
    created: dict[str, int] = field(default_factory=dict)  # pod uid -> creation order
    pids_file: Path | None = None  # each pod process's pid is appended here

    def bump(self, obj: Obj) -> Obj:
        obj["metadata"]["resourceVersion"] = str(next(self.revision))
        return obj

    def answer(self, obj: Obj, code: int = 200) -> JSONResponse:
        error = validate(obj)
        if error is not None:  # the emulator drifted from the schema: say so loudly
            self.invalid.append(f"{obj.get('kind')}: {error}")
            return status(500, "InternalError", f"emulator answer invalid: {error}")
        return JSONResponse(obj, status_code=code)

    def of(self, plural: str, namespace: str) -> list[Obj]:
        return [
            o for (p, ns, _), o in sorted(self.objects.items()) if p == plural and ns == namespace
        ]

    # -- generic handlers ------------------------------------------------

    async def list_(self, request: Request) -> Response:
        kind = KINDS[request.path_params["plural"]]
        namespace = request.path_params["namespace"]
        try:
            selects = parse_selector(request.query_params.get("labelSelector", ""))
        except ValueError as exc:
            return status(400, "BadRequest", str(exc))
        items = [
            o for o in self.of(kind.plural, namespace) if selects(o["metadata"].get("labels") or {})
        ]
        body = {
            "apiVersion": kind.group_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(next(self.revision))},
            "items": items,
        }
        return self.answer(body)

    async def get(self, request: Request) -> Response:
        kind = KINDS[request.path_params["plural"]]
        key = (kind.plural, request.path_params["namespace"], request.path_params["name"])
        obj = self.objects.get(key)
        if obj is None:
            return status(404, "NotFound", f'{kind.plural} "{key[2]}" not found')
        return self.answer(obj)

    async def create(self, request: Request) -> Response:
        kind = KINDS[request.path_params["plural"]]
        namespace = request.path_params["namespace"]
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            return status(400, "BadRequest", "resourceVersion should not be set on create")
        meta.setdefault("namespace", namespace)
        error = validate(obj)
        if error is not None:
            return status(422, "Invalid", error)
        key = (kind.plural, namespace, meta.get("name", ""))
        if key in self.objects:
            return status(409, "AlreadyExists", f'{kind.plural} "{key[2]}" already exists')
        meta["uid"] = secrets.token_hex(8)
        meta["creationTimestamp"] = now_iso()[:19] + "Z"
        if kind is DEPLOYMENTS:
            meta["generation"] = 1
            obj["status"] = {"observedGeneration": 1, "replicas": 0, "readyReplicas": 0}
        self.objects[key] = self.bump(obj)
        return self.answer(obj, 201)

    async def replace(self, request: Request) -> Response:
        kind = KINDS[request.path_params["plural"]]
        key = (kind.plural, request.path_params["namespace"], request.path_params["name"])
        new = await request.json()
        error = validate(new)
        if error is not None:
            return status(422, "Invalid", error)
        old = self.objects.get(key)
        if old is None:
            return status(404, "NotFound", f'{kind.plural} "{key[2]}" not found')
        conflict = self._stale(old, new)
        if conflict is not None:
            return conflict
        new["metadata"]["uid"] = old["metadata"]["uid"]
        new["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        self.objects[key] = self.bump(new)
        return self.answer(new)

    def _stale(self, old: Obj, new: Obj) -> JSONResponse | None:
        sent = (new.get("metadata") or {}).get("resourceVersion")
        if sent and sent != old["metadata"]["resourceVersion"]:
            return status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {old["kind"]} "{old["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        return None

    async def patch_pod(self, request: Request) -> Response:
        key = ("pods", request.path_params["namespace"], request.path_params["name"])
        if request.headers.get("content-type", "").split(";")[0] != "application/merge-patch+json":
            return status(415, "UnsupportedMediaType", "emulator: merge-patch+json only")
        obj = self.objects.get(key)
        if obj is None:
            return status(404, "NotFound", f'pods "{key[2]}" not found')
        patch = await request.json()
        conflict = self._stale(obj, patch)
        if conflict is not None:
            return conflict
        merged = merge_patch(copy.deepcopy(obj), patch)
        error = validate(merged)
        if error is not None:
            return status(422, "Invalid", error)
        self.objects[key] = self.bump(merged)
        return self.answer(merged)

    async def delete(self, request: Request) -> Response:
        kind = KINDS[request.path_params["plural"]]
        key = (kind.plural, request.path_params["namespace"], request.path_params["name"])
        obj = self.objects.get(key)
        if obj is None:
            return status(404, "NotFound", f'{kind.plural} "{key[2]}" not found')
        if kind is PODS:
            self._terminate(obj)
        else:
            del self.objects[key]
        return self.answer(obj)

    # -- the Deployment's scale subresource -------------------------------

    def _scale_of(self, deployment: Obj) -> Obj:
        meta = deployment["metadata"]
        labels = deployment["spec"]["selector"].get("matchLabels") or {}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": deployment["spec"].get("replicas", 1)},
            "status": {
                "replicas": deployment["status"].get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    async def get_scale(self, request: Request) -> Response:
        key = ("deployments", request.path_params["namespace"], request.path_params["name"])
        obj = self.objects.get(key)
        if obj is None:
            return status(404, "NotFound", f'deployments.apps "{key[2]}" not found')
        return self.answer(self._scale_of(obj))

    async def replace_scale(self, request: Request) -> Response:
        key = ("deployments", request.path_params["namespace"], request.path_params["name"])
        body = await request.json()
        error = validate(body)
        if error is not None:
            return status(422, "Invalid", error)
        if body.get("kind") != "Scale" or body.get("apiVersion") != "autoscaling/v1":
            return status(400, "BadRequest", "expected an autoscaling/v1 Scale")
        obj = self.objects.get(key)
        if obj is None:
            return status(404, "NotFound", f'deployments.apps "{key[2]}" not found')
        conflict = self._stale(obj, body)
        if conflict is not None:
            return conflict
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            return status(422, "Invalid", "spec.replicas: must be greater than or equal to 0")
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        self.bump(obj)
        return self.answer(self._scale_of(obj))

    # -- the fake kubelet and ReplicaSet ----------------------------------

    async def kubelet(self) -> None:
        """Converge every Deployment's pods to its replicas; start, probe and reap processes."""
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, trust_env=False) as probe:
            while True:
                for deployment in [
                    o for (p, _, _), o in list(self.objects.items()) if p == "deployments"
                ]:
                    self._converge(deployment)
                await self._observe(probe)
                await asyncio.sleep(KUBELET_EVERY)

    def _pods_of(self, deployment: Obj) -> list[Obj]:
        labels = deployment["spec"]["selector"].get("matchLabels") or {}
        return [
            p
            for p in self.of("pods", deployment["metadata"]["namespace"])
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    def _converge(self, deployment: Obj) -> None:
        pods = [p for p in self._pods_of(deployment) if _active(p)]
        want = deployment["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            self._create_pod(deployment)
        if len(pods) > want:
            for victim in sorted(pods, key=self._victim_rank)[: len(pods) - want]:
                self._terminate(victim)
        live = [p for p in self._pods_of(deployment) if _active(p)]
        ready = sum(1 for p in live if _is_ready(p))
        new_status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(live),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if deployment.get("status") != new_status:
            deployment["status"] = new_status
            self.bump(deployment)

    def _victim_rank(self, pod: Obj) -> tuple[int, int, int]:
        """ReplicaSet scale-down order, reduced: unready first, lower deletion cost, newer."""
        cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, "0"))
        order = self.created.get(pod["metadata"]["uid"], 0)
        return (1 if _is_ready(pod) else 0, cost, -order)

    def _create_pod(self, deployment: Obj) -> None:
        meta = deployment["metadata"]
        template = copy.deepcopy(deployment["spec"]["template"])
        name = f"{meta['name']}-{meta['uid'][:6]}-{secrets.token_hex(3)[:5]}"
        port = free_port()
        spec = template["spec"]
        for container in spec["containers"]:
            for declared in container.get("ports") or []:
                if declared.get("name") == "http":
                    declared["containerPort"] = port  # emulator liberty: one port per pod
            for var in container.get("env") or []:
                if var.get("name") == "PORT":
                    var["value"] = str(port)
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "uid": secrets.token_hex(8),
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "creationTimestamp": now_iso()[:19] + "Z",
                "generateName": f"{meta['name']}-",
            },
            "spec": spec,
            "status": {
                "phase": "Pending",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": now_iso()[:19] + "Z",
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        }
        container = spec["containers"][0]
        argv = [
            expand(a, container, pod)
            for a in [*container.get("command", []), *container.get("args", [])]
        ]
        env = {**os.environ, **{v["name"]: expand_env(v, pod) for v in container.get("env") or []}}
        env[POD_MARK] = pod["metadata"]["uid"]  # how a test finds a pod left behind
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        self.runs[pod["metadata"]["uid"]] = PodRun(process, port)
        if self.pids_file is not None:
            with self.pids_file.open("a", encoding="ascii") as pids:
                pids.write(f"{process.pid}\n")
        self.created[pod["metadata"]["uid"]] = len(self.created)
        self.objects[("pods", meta["namespace"], name)] = self.bump(pod)

    def _terminate(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return
        pod["metadata"]["deletionTimestamp"] = now_iso()[:19] + "Z"
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        pod["metadata"]["deletionGracePeriodSeconds"] = grace
        run = self.runs.get(pod["metadata"]["uid"])
        if run is not None and run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
            asyncio.get_running_loop().call_later(grace, _kill, run.process)
        self.bump(pod)

    async def _observe(self, probe: httpx.AsyncClient) -> None:
        for key in [k for k in self.objects if k[0] == "pods"]:
            pod = self.objects.get(key)  # re-read: a request may have replaced it meanwhile
            if pod is None:
                continue
            run = self.runs.get(pod["metadata"]["uid"])
            code = None if run is None else run.process.poll()
            if pod["metadata"].get("deletionTimestamp"):
                if run is None or code is not None:  # terminated: the object goes
                    self.objects.pop(key, None)
                    self.runs.pop(pod["metadata"]["uid"], None)
                continue
            if run is None:
                continue
            if code is not None and pod["status"]["phase"] != "Failed":
                pod["status"]["phase"] = "Failed"
                pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
                pod["status"]["containerStatuses"] = [_container_status(pod, False, code)]
                self.bump(pod)
                continue
            if code is None and not run.ready:
                path = _probe_path(pod)
                with contextlib.suppress(httpx.HTTPError):
                    answer = await probe.get(f"http://127.0.0.1:{run.port}{path}")
                    run.ready = answer.status_code == 200
            if code is None and run.ready and not _is_ready(pod):
                pod = self.objects.get(key) or pod  # a request may have replaced it meanwhile
                if key in self.objects and not pod["metadata"].get("deletionTimestamp"):
                    pod["status"]["phase"] = "Running"
                    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
                    pod["status"]["containerStatuses"] = [_container_status(pod, True, None)]
                    self.bump(pod)

    def stop_all(self) -> None:
        for run in self.runs.values():
            _kill(run.process)
        for run in self.runs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(5)

    # -- auth and routing -------------------------------------------------

    def app(self) -> Starlette:
        def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
            async def run(request: Request) -> Response:
                self.calls.append(f"{request.method} {request.url.path}")
                if (
                    self.token is not None
                    and request.headers.get("authorization") != f"Bearer {self.token}"
                ):
                    return status(401, "Unauthorized", "Unauthorized")
                response: Response = await handler(request)
                return response

            return run

        async def emulator_state(request: Request) -> Response:
            """Not Kubernetes: what the tests read (calls made, invalid answers)."""
            return JSONResponse({"calls": self.calls, "invalid": self.invalid})

        one = "/{plural}/{name}"
        routes = [
            Route("/_emulator", emulator_state),
            Route(
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
                guarded(self.get_scale),
                methods=["GET"],
            ),
            Route(
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
                guarded(self.replace_scale),
                methods=["PUT"],
            ),
            Route(
                "/api/v1/namespaces/{namespace}/pods/{name}",
                guarded(self.patch_pod),
                methods=["PATCH"],
            ),
        ]
        for prefix in (
            "/api/v1",
            "/apis/apps/v1",
            "/apis/coordination.k8s.io/v1",
            "/apis/autoscaling/v2",
        ):
            base = f"{prefix}/namespaces/{{namespace}}"
            routes += [
                Route(base + "/{plural}", guarded(self.list_), methods=["GET"]),
                Route(base + "/{plural}", guarded(self.create), methods=["POST"]),
                Route(base + one, guarded(self.get), methods=["GET"]),
                Route(base + one, guarded(self.replace), methods=["PUT"]),
                Route(base + one, guarded(self.delete), methods=["DELETE"]),
            ]
        return Starlette(routes=routes)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


def _active(pod: Obj) -> bool:
    """What the ReplicaSet counts: not being deleted, not Failed or Succeeded."""
    return not pod["metadata"].get("deletionTimestamp") and pod["status"]["phase"] not in (
        "Failed",
        "Succeeded",
    )


def _is_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod["status"].get("conditions") or []
    )


def _probe_path(pod: Obj) -> str:
    probe = pod["spec"]["containers"][0].get("readinessProbe") or {}
    return str((probe.get("httpGet") or {}).get("path", "/"))


def _container_status(pod: Obj, ready: bool, code: int | None) -> Obj:
    container = pod["spec"]["containers"][0]
    state: Obj = (
        {"running": {"startedAt": pod["status"]["startTime"]}}
        if code is None
        else {"terminated": {"exitCode": code}}
    )
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": code is None,
        "state": state,
    }


def expand_env(var: Mapping[str, Any], pod: Obj) -> str:
    if "value" in var:
        return str(var["value"])
    path = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
    if path == "metadata.name":
        return str(pod["metadata"]["name"])
    if path == "metadata.namespace":
        return str(pod["metadata"]["namespace"])
    if path == "status.podIP":
        return str(pod["status"]["podIP"])
    raise ValueError(f"emulator: unsupported env source {var!r}")


def expand(arg: str, container: Mapping[str, Any], pod: Obj) -> str:
    """``$(VAR)`` in command/args, from the container's env (as the kubelet does)."""
    values = {v["name"]: expand_env(v, pod) for v in container.get("env") or []}
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values.get(m[1], m[0]), arg)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
