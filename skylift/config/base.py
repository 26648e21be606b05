"""Shared pieces of the config models: the strict base model, names, addresses, ports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

ENV_PREFIX = "SKYLIFT_"
BACKEND_KINDS = ("process", "docker", "swarm", "kubernetes")
EngineMetric = Literal["cpu", "memory", "rps", "connections", "p95_latency", "queue"]
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""What an environment variable name may look like."""
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_NAME_HINT = "use lowercase letters, digits and '-', starting with a letter (max 31 chars)"


class Model(BaseModel):
    """Base: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_listen(value: Any) -> str:
    if not isinstance(value, str | int):
        raise ValueError("write an address like '127.0.0.1:8080'")
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {text!r}: write 'HOST:PORT' with a port in 1-65535")
    return f"{host or '127.0.0.1'}:{int(port)}"


Listen = Annotated[
    str,
    Field(json_schema_extra={"pattern": r"^([^:]*:)?\d{1,5}$"}),
]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


class PortRange(Model):
    """Loopback ports handed out to replicas, inclusive."""

    start: int = Field(20000, ge=1024, le=65535)
    end: int = Field(20999, ge=1024, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) > end ({self.end}): swap them")
        return self

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where, what, and how to fix it."""

    path: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")
