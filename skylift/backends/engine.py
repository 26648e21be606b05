"""What the docker and swarm backends share: the lazily opened Engine client,
the labels that find a replica again, its object name and its command line.

Both run replicas through the same Docker Engine API; only what a replica *is*
differs (a container, or a one-task Swarm service).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from skylift.backends.base import BackendError
from skylift.model import Replica

if TYPE_CHECKING:
    from docker import DockerClient

    from skylift.config_docker import ContainerBackend

LABEL_PROJECT = "skylift.project"
LABEL_SERVICE = "skylift.service"
LABEL_REPLICA = "skylift.replica"
API_TIMEOUT = 30.0  # seconds for one Engine API call (stop adds its grace on top)


def default_client() -> DockerClient:
    return docker.from_env(timeout=int(API_TIMEOUT))


class EngineBackend:
    """Base of the container backends; no I/O until the client is first used."""

    def __init__(
        self,
        service_name: str,
        config: ContainerBackend,
        *,
        project: str,
        client_factory: Callable[[], DockerClient] | None = None,
    ) -> None:
        self.service_name = service_name
        self.project = project
        self._config = config
        self._client_factory = client_factory or default_client
        self._client: DockerClient | None = None
        self._client_lock = threading.Lock()
        self._known: dict[str, Replica] = {}  # started or adopted, not yet stopped
        self._exit_codes: dict[str, int] = {}  # last exit code seen per replica id

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

    def _labels(self, replica_id: str) -> dict[str, str]:
        return {
            **self._config.labels,
            LABEL_PROJECT: self.project,
            LABEL_SERVICE: self.service_name,
            LABEL_REPLICA: replica_id,
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
