"""The ``backend: {kind: swarm, ...}`` block of a service (see docs/swarm.md).

Kept apart from :mod:`skylift.config` like :mod:`skylift.config.docker`; the
field names are the docker backend's, so moving a service between ``docker``
and ``swarm`` changes only ``kind``. The multi-node fields (``managers``,
``nodes``, ``constraints``) are optional: without ``managers`` the backend is
the single-node one (this node's engine, replicas on 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skylift.config.docker import ContainerBackend

# `node.labels.zone==eu-1`, `node.role!=manager`, `node.id==abc`: what Swarm's
# --constraint takes (a key, == or !=, a value); Swarm checks the keys itself.
_CONSTRAINT = re.compile(r"^\s*[A-Za-z0-9_.\-/]+\s*(==|!=)\s*\S+\s*$")


class EngineTLS(BaseModel):
    """Client certificate, key and the CA that signed the engine's certificate (PEM files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: str = Field(description="CA certificate that signed the engine's server certificate")
    cert: str = Field(description="client certificate (signed by the same CA)")
    key: str = Field(description="the client certificate's private key")


class SwarmEngine(BaseModel):
    """How skylift reaches one node's Docker Engine: a unix socket when the engine is
    local, else TCP with mutual TLS (the Docker API is root on that host: never plain TCP)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str = Field(
        description="unix:///path/docker.sock (local) or tcp://HOST:2376 (with `tls`)"
    )
    tls: EngineTLS | None = Field(None, description="client certificates; required for tcp://")
    address: str | None = Field(
        None,
        description="address HAProxy reaches this node's tasks on; default: the node's "
        "Swarm address (Status.Addr)",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"address {value!r} is not an IP address: give the node's address "
                    "as HAProxy reaches it, e.g. 10.0.0.12"
                ) from None
        return value

    @model_validator(mode="after")
    def _scheme(self) -> SwarmEngine:
        if self.engine.startswith("unix://"):
            if self.tls is not None:
                raise ValueError(f"engine {self.engine!r} is a unix socket: remove `tls`")
        elif self.engine.startswith("tcp://"):
            if self.tls is None:
                raise ValueError(
                    f"engine {self.engine!r} is TCP without `tls`: the Docker API is root on "
                    "that host; add tls: {ca, cert, key} (see docs/swarm-lab.md)"
                )
        else:
            raise ValueError(
                f"engine {self.engine!r}: write unix:///path/docker.sock or tcp://HOST:2376"
            )
        return self


class SwarmBackend(ContainerBackend):
    """Each replica is a one-task Swarm service, published in host mode on an ephemeral port.

    Host mode cannot be bound to one address: the port listens on every
    interface (see docs/swarm.md).
    """

    kind: Literal["swarm"] = "swarm"
    managers: list[SwarmEngine] = Field(
        default_factory=list,
        description="manager engines, tried in order (the next one when one does not "
        "answer); set = multi-node: tasks run on any node and are reached on its address. "
        "Empty: this node's engine (DOCKER_HOST), replicas on 127.0.0.1",
    )
    nodes: list[SwarmEngine] = Field(
        default_factory=list,
        description="each node's own engine (for container stats, health and logs) and, "
        "optionally, the address its tasks are reached on; matched to Swarm nodes by the "
        "node id each engine reports",
    )
    constraints: list[str] = Field(
        default_factory=list,
        description="Swarm placement constraints, e.g. node.labels.zone==eu-1, node.role!=manager",
    )

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _CONSTRAINT.match(item):
                raise ValueError(
                    f"constraint {item!r}: write KEY==VALUE or KEY!=VALUE, e.g. "
                    "node.labels.zone==eu-1"
                )
        return value

    @model_validator(mode="after")
    def _multinode(self) -> SwarmBackend:
        if (self.nodes or self.constraints) and not self.managers:
            raise ValueError(
                "`nodes` and `constraints` need `managers` (the manager engines skylift "
                "asks for task state): add managers: [{engine: unix:///...}]"
            )
        return self

    @property
    def multinode(self) -> bool:
        return bool(self.managers)
