"""The ``backend: {kind: swarm, ...}`` block of a service (see docs/swarm.md).

Kept apart from :mod:`skylift.config` like :mod:`skylift.config_docker`; the
field names are the docker backend's, so moving a service between ``docker``
and ``swarm`` changes only ``kind``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from skylift.config_docker import RESERVED_LABEL_PREFIX
from skylift.metrics.resources import Bytes, Cores

_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


class SwarmBackend(BaseModel):
    """Each replica is a one-task Swarm service, published in host mode on an ephemeral port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["swarm"] = "swarm"
    image: str = Field(
        description="image name or id present on this node's engine (skylift never pulls)"
    )
    command: list[str] | str | None = Field(
        None,
        description="command (argv list, or a string split like a shell); '{replica}' and "
        "'{port}' (the container port) are replaced; default: the image's CMD",
    )
    env: dict[str, str] = Field(default_factory=dict)
    port: int = Field(
        ge=1,
        le=65535,
        description="port the app listens on inside the container; published in host mode "
        "with a host port Docker picks, reached on 127.0.0.1",
    )
    cpus: Cores | None = Field(None, description="CPU limit in cores (service --limit-cpu)")
    memory: Bytes | None = Field(
        None, description="memory limit, e.g. 256Mi (service --limit-memory)"
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="extra service and container labels (not starting 'skylift.')",
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
                    "uses to find its services; choose another prefix"
                )
            if not _LABEL_KEY.match(key):
                raise ValueError(f"invalid label key {key!r}: use letters, digits, '.', '-', '/'")
        return value
