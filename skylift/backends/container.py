"""What the docker and swarm backends share: the lazily opened Engine client,
the labels that find a replica again, its object name, its command line, and
the events stream of its containers (a Swarm task's container carries the same
labels, so deaths are pushed for both).

Both run replicas through the same Docker Engine API; only what a replica *is*
differs (a container, or a one-task Swarm service).

No Engine call runs on the event loop, and none piles up: calls run in this
backend's own small thread pool (a hung dockerd cannot starve the threads the
rest of the controller uses), each bounded by the client's ``API_TIMEOUT``.
``is_alive``/``exit_code`` answer from a snapshot of what runs, re-read once per
tick by :meth:`EngineBackend.refresh` (one list call, single-flight, at most
``REFRESH_TIMEOUT`` of waiting), so a frozen dockerd stalls only the loops of
the services that use it, and ``/livez`` can say which call it hangs in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import os
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import docker
import docker.errors

from skylift.backends.base import BackendError
from skylift.backends.env import replica_env
from skylift.model import Replica

if TYPE_CHECKING:
    from docker import DockerClient

    from skylift.config.docker import ContainerBackend

LABEL_PROJECT = "skylift.project"
LABEL_SERVICE = "skylift.service"
LABEL_REPLICA = "skylift.replica"
LABEL_EPOCH = "skylift.epoch"
API_TIMEOUT = 10.0  # seconds for one Engine API call (stop adds its grace on top)
REFRESH_TIMEOUT = 5.0
"""Seconds a tick waits for the list of what runs before its loop skips the tick."""
SNAPSHOT_REREAD = 1.0
"""A check on a snapshot older than this starts a new list in the background."""
SNAPSHOT_STALE = 30.0
"""A snapshot older than this is not trusted: checks answer "alive" (unknown) instead."""
ENGINE_WORKERS = 4
"""Threads per backend for Engine calls (start, stop, list, events)."""

P = ParamSpec("P")
T = TypeVar("T")


def default_client() -> DockerClient:
    return docker.from_env(timeout=int(API_TIMEOUT))


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """One change of a replica's container, as the Docker events stream reports it.

    ``kind`` is ``died`` (the container's main process exited; ``exit_code``
    set), ``unhealthy`` or ``healthy`` (its HEALTHCHECK changed status).
    """

    replica_id: str
    container_id: str
    kind: Literal["died", "unhealthy", "healthy"]
    exit_code: int | None
    at: float  # epoch seconds, as reported by the daemon


class EventStream:
    """Container events of one service, read from the Engine in a worker thread."""

    def __init__(
        self,
        raw: Any,
        parse: Callable[[Mapping[str, Any]], ContainerEvent | None],
        service: str,
    ) -> None:
        self._raw = raw  # docker's CancellableStream of decoded event dicts
        self._parse = parse
        self._service = service
        self._queue: asyncio.Queue[Mapping[str, Any] | BaseException | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._pump, args=(loop,), name=f"docker-events-{service}", daemon=True
        )
        self._thread.start()

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        item: BaseException | None = None
        try:
            for raw in self._raw:
                loop.call_soon_threadsafe(self._queue.put_nowait, raw)
        except Exception as exc:  # handed to the consumer, never swallowed
            item = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ContainerEvent:
        while True:
            raw = await self._queue.get()
            if raw is None or isinstance(raw, BaseException):
                raise BackendError(
                    f"Docker events stream for {self._service!r} ended: {raw or 'closed'}; "
                    "subscribe again"
                )
            event = self._parse(raw)
            if event is not None:
                return event

    async def aclose(self) -> None:
        """Close the stream; the reader thread ends with it."""
        with contextlib.suppress(Exception):  # already broken: nothing left to close
            await asyncio.wait_for(asyncio.to_thread(self._raw.close), API_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the Engine listed for one service, and when the list was asked for."""

    taken: float  # monotonic, when the request was sent
    objects: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # id -> summary


class EngineBackend:
    """Base of the container backends; no I/O until the client is first used."""

    epoch: int | None = None  # the controller's fencing token, labelled on what it starts

    def __init__(
        self,
        service_name: str,
        config: ContainerBackend,
        *,
        project: str,
        client_factory: Callable[[], DockerClient] | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.service_name = service_name
        self.project = project
        self._config = config
        self._base_dir = base_dir or Path.cwd()  # env_file is relative to the config
        self._client_factory = client_factory or default_client
        self._client: DockerClient | None = None
        self._client_lock = threading.Lock()
        self._known: dict[str, Replica] = {}  # started or adopted, not yet stopped
        self._exit_codes: dict[str, int] = {}  # last exit code seen per replica id
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=ENGINE_WORKERS, thread_name_prefix=f"engine-{service_name}"
        )
        self._calls = itertools.count()
        self._inflight: dict[int, tuple[str, float]] = {}  # call -> (what, since)
        self._inflight_lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._refreshing: concurrent.futures.Future[Snapshot] | None = None
        self._since: dict[str, float] = {}  # replica id -> monotonic time it became known

    @property
    def client(self) -> DockerClient:
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = self._client_factory()
                except docker.errors.DockerException as exc:
                    raise BackendError(
                        f"cannot reach the Docker Engine: {exc}; start dockerd or set DOCKER_HOST"
                    ) from exc
            return self._client

    def stats(self, container_id: str) -> Mapping[str, Any]:
        """The Engine's stats of one container, read once (``one_shot``: no 1 s wait
        for a second sample); empty when the container is gone."""
        try:
            return dict(self.client.api.stats(container_id, stream=False, one_shot=True))
        except docker.errors.NotFound:
            return {}

    def close(self) -> None:
        """Close the Engine connection (a later call opens a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- Engine calls off the event loop ----------------------------------------------

    def _tracked(self, what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` (in a pool thread) while ``waits()`` reports it in flight."""
        call = next(self._calls)
        with self._inflight_lock:
            self._inflight[call] = (what, time.monotonic())
        try:
            return fn(*args, **kwargs)
        finally:
            with self._inflight_lock:
                self._inflight.pop(call, None)

    async def _call(self, what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A blocking Engine call in this backend's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self._tracked, what, fn, *args, **kwargs)
        )

    def waits(self) -> list[tuple[str, float]]:
        """Engine calls in flight as ``(what, since)``: ``/livez`` names the one it hangs in."""
        with self._inflight_lock:
            calls = list(self._inflight.values())
        return [(f"Docker Engine call {what!r}", since) for what, since in calls]

    def dependency(self) -> str:
        host = os.environ.get("DOCKER_HOST")
        return "the Docker Engine" + (f" at {host}" if host else "") + " (list of what runs)"

    async def refresh(self) -> None:
        """Re-read what runs (one list, shared by concurrent callers) within
        ``REFRESH_TIMEOUT``; :class:`BackendError` when the Engine does not answer."""
        future = self._start_refresh()
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), REFRESH_TIMEOUT)
        except TimeoutError:
            raise BackendError(
                f"the Docker Engine did not list {self.service_name!r}'s replicas within "
                f"{REFRESH_TIMEOUT:g}s (dockerd hung or overloaded)"
            ) from None
        except BackendError:
            raise
        except Exception as exc:  # the SDK's errors, connection refused: one clear type
            raise BackendError(f"cannot reach the Docker Engine: {exc}") from exc

    def _start_refresh(self) -> concurrent.futures.Future[Snapshot]:
        """The list in flight, or a new one: never two at once (no pile-up on a hung daemon)."""
        with self._inflight_lock:
            future = self._refreshing
            if future is None or future.done():
                future = self._refreshing = self._executor.submit(
                    self._tracked, "list", self._take_snapshot
                )
            return future

    def _take_snapshot(self) -> Snapshot:
        taken = time.monotonic()
        snapshot = Snapshot(taken, self._list_objects())
        self._snapshot = snapshot
        return snapshot

    def _list_objects(self) -> Mapping[str, Mapping[str, Any]]:
        """Summaries of this service's objects by id (one list call; per backend)."""
        raise NotImplementedError

    def _view(self, object_id: str, replica_id: str) -> Mapping[str, Any] | bool | None:
        """The snapshot's summary of ``object_id``; ``True`` when the snapshot cannot
        tell (none yet, too old, or taken before the replica became known: then a list
        is started in the background), ``None`` when it is provably gone."""
        snapshot = self._snapshot
        age = None if snapshot is None else time.monotonic() - snapshot.taken
        if age is None or age > SNAPSHOT_REREAD:
            self._start_refresh()  # in the background: this check answers from what it has
        if snapshot is None or age is None or age > SNAPSHOT_STALE:
            return True
        found = snapshot.objects.get(object_id)
        if found is None and self._since.get(replica_id, 0.0) >= snapshot.taken:
            return True  # started (or adopted) after the list was asked for
        return found

    def _became_known(self, replica: Replica) -> None:
        self._known[replica.id] = replica
        self._since[replica.id] = time.monotonic()

    def _forget(self, replica_id: str) -> None:
        self._known.pop(replica_id, None)
        self._since.pop(replica_id, None)

    def _labels(self, replica_id: str) -> dict[str, str]:
        return {
            **self._config.labels,
            LABEL_PROJECT: self.project,
            LABEL_SERVICE: self.service_name,
            LABEL_REPLICA: replica_id,
            **({LABEL_EPOCH: str(self.epoch)} if self.epoch is not None else {}),
        }

    def _env(self, replica_id: str) -> dict[str, str]:
        """The container's environment: ``env_file`` < ``env`` < skylift's own, nothing
        of the controller's (the image brings its own PATH and the like)."""
        cfg = self._config
        return replica_env(
            base={},
            env_file=self._base_dir / cfg.env_file if cfg.env_file else None,
            env=cfg.env,
            own={
                "SKYLIFT_REPLICA": replica_id,
                "SKYLIFT_SERVICE": self.service_name,
                "PORT": str(cfg.port),
            },
        )

    def _log_options(self) -> dict[str, str]:
        """json-file rotation: ``max-size`` and ``max-file`` (the live file counts)."""
        return {
            "max-size": str(self._config.log_max_bytes),
            "max-file": str(self._config.log_backups + 1),
        }

    def _object_name(self, replica_id: str) -> str:
        """The container's or Swarm service's name: ``<project>-<replica id>``."""
        # controller ids already start with the service name ("web-a1b2c3")
        if replica_id.startswith(f"{self.service_name}-"):
            return f"{self.project}-{replica_id}"
        return f"{self.project}-{self.service_name}-{replica_id}"

    def _command(self, replica_id: str) -> list[str] | None:
        command = self._config.command
        if command is None:
            return None
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        port = str(self._config.port)
        return [t.replace("{port}", port).replace("{replica}", replica_id) for t in argv]

    async def events(self) -> EventStream:
        """Subscribe to deaths and health changes of this service's containers.

        Returns once the Engine's events stream is open, so nothing that
        happens afterwards is missed. Iterate the result (``async for``) and
        ``await stream.aclose()`` when done. The iteration raises
        :class:`BackendError` if the stream breaks (dockerd restarts): the
        consumer subscribes again and relies on ``is_alive`` polling meanwhile.
        """
        filters = {
            "type": ["container"],
            "event": ["die", "health_status"],
            "label": [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={self.service_name}"],
        }
        stream = await self._call(
            "events",
            lambda: self.client.api.events(since=int(time.time()), decode=True, filters=filters),
        )
        return EventStream(stream, self._event_from, self.service_name)

    def _event_from(self, raw: Mapping[str, Any]) -> ContainerEvent | None:
        actor = raw.get("Actor") or {}
        labels = actor.get("Attributes") or {}
        replica_id = labels.get(LABEL_REPLICA)
        action = str(raw.get("Action") or raw.get("status") or "")
        if replica_id is None:
            return None
        at = float(raw.get("timeNano", 0)) / 1e9 or float(raw.get("time", 0))
        container_id = str(actor.get("ID") or raw.get("id") or "")
        if action == "die":
            code = labels.get("exitCode")
            exit_code = int(code) if code is not None and code.lstrip("-").isdigit() else None
            if exit_code is not None:
                self._exit_codes[replica_id] = exit_code
            return ContainerEvent(replica_id, container_id, "died", exit_code, at)
        if action.startswith("health_status"):
            status = action.partition(":")[2].strip()
            if status in ("healthy", "unhealthy"):
                kind: Literal["healthy", "unhealthy"] = (
                    "healthy" if status == "healthy" else "unhealthy"
                )
                return ContainerEvent(replica_id, container_id, kind, None, at)
        return None
