"""The ``backend: {kind: docker, ...}`` block of a service (see docs/docker.md).

Kept apart from :mod:`skylift.config` so the docker backend and its tests can
import it without the whole config tree; ``skylift.config`` puts it in the
``Service.backend`` union, discriminated by ``kind``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from skylift.metrics.resources import Bytes, Cores

# What Docker accepts as a label key, minus the prefix skylift keeps for itself.
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
RESERVED_LABEL_PREFIX = "skylift."


class ContainerBackend(BaseModel):
    """What every container backend (docker, swarm) takes: the same names in both,
    so moving a service between them changes only ``kind``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(
        description="image name or id present in the local engine (skylift never pulls)"
    )
    command: list[str] | str | None = Field(
        None,
        description="command (argv list, or a string split like a shell); '{replica}' and "
        "'{port}' (the container port) are replaced; default: the image's CMD",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="variables set in the container (the controller's own are never passed)",
    )
    env_file: str | None = Field(
        None,
        description="dotenv file (relative to the config) whose variables the container gets, "
        "read at each start; `env` wins over it",
    )
    log_max_bytes: Bytes = Field(
        10 * 1024 * 1024,
        description="Docker json-file log rotated past this size (log option max-size)",
    )
    log_backups: int = Field(
        1, ge=1, le=20, description="rotated log files Docker keeps (max-file is this + 1)"
    )
    port: int = Field(
        ge=1,
        le=65535,
        description="port the app listens on inside the container; published with a host "
        "port Docker picks and reached on 127.0.0.1",
    )
    cpus: Cores | None = Field(None, description="CPU limit in cores, e.g. 0.5 or 500m")
    memory: Bytes | None = Field(None, description="memory limit, e.g. 256Mi")
    labels: dict[str, str] = Field(
        default_factory=dict, description="extra labels (not starting 'skylift.')"
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value):
            raise ValueError(f"invalid image {value!r}: write a name like 'myapp:1.2' or an id")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str | None) -> list[str] | str | None:
        if value is not None and not (value.strip() if isinstance(value, str) else value):
            raise ValueError("command is empty: leave it out to run the image's CMD")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(
                    f"label {key!r}: the 'skylift.' prefix is reserved for the labels skylift "
                    "uses to find what it runs; choose another prefix"
                )
            if not _LABEL_KEY.match(key):
                raise ValueError(f"invalid label key {key!r}: use letters, digits, '.', '-', '/'")
        return value


class DockerBackend(ContainerBackend):
    """Replicas are containers of a local image, published on an ephemeral loopback port."""

    kind: Literal["docker"] = "docker"
    init: bool = Field(
        False,
        description="run docker-init as PID 1 so SIGTERM reaches an app that ignores it "
        "as PID 1 (docker --init)",
    )
    pull: Literal["never"] = Field(
        "never", description="images are built or loaded locally; skylift never pulls"
    )
