"""The ``backend: {kind: kubernetes, ...}`` block of a service (see docs/kubernetes.md).

Kept apart from :mod:`skylift.config` like :mod:`skylift.config.swarm`;
``skylift.config`` puts it in the ``Service.backend`` union, discriminated by ``kind``.
skylift never creates the Deployment: the operator applies it (image, probes,
resources are Kubernetes' business); skylift scales it, or writes its HPA.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skylift.units import Duration

# RFC 1123 DNS label (namespaces) and subdomain (Deployment, Lease names)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class KubernetesBackend(BaseModel):
    """Replicas are the pods of one Deployment, scaled through its ``scale`` subresource.

    Either ``api_server`` (with ``token_file`` and ``ca_file``, as a pod's service
    account mounts them) or ``kubeconfig`` says how the apiserver is reached.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["kubernetes"] = "kubernetes"
    api_server: str | None = Field(
        None, description="apiserver URL, e.g. https://10.0.0.1:6443 (or use `kubeconfig`)"
    )
    token_file: str | None = Field(
        None,
        description="file holding the bearer token (a service account's: "
        "/var/run/secrets/kubernetes.io/serviceaccount/token); read at start, never logged",
    )
    ca_file: str | None = Field(
        None, description="CA bundle the apiserver's certificate is checked against"
    )
    kubeconfig: str | None = Field(
        None, description="kubeconfig file to take server, credentials and CA from instead"
    )
    namespace: str = Field("default", description="namespace of the Deployment and the Lease")
    deployment: str | None = Field(
        None, description="Deployment whose pods are the replicas (default: the service's name)"
    )
    port: int = Field(
        ge=1, le=65535, description="container port the app listens on; reached on the pod IP"
    )
    port_name: str = Field(
        "http",
        description="name of the container port to use when a pod declares one by that name "
        "(its number wins over `port`)",
    )
    mode: Literal["scale", "advisor"] = Field(
        "scale",
        description="`scale`: skylift scales the Deployment; `advisor`: skylift writes an "
        "autoscaling/v2 HPA from the service's autoscale policy and leaves scaling to it",
    )
    lease: str | None = Field(
        None,
        description="coordination.k8s.io Lease held by the one acting controller "
        "(default: skylift-<deployment>)",
    )
    lease_duration: Duration = Field(
        15.0, description="leaseDurationSeconds: a holder not renewing this long is replaced"
    )
    timeout: Duration = Field(10.0, description="longest wait for one apiserver call")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _LABEL.match(value):
            raise ValueError(
                f"invalid namespace {value!r}: lowercase letters, digits and '-', at most 63"
            )
        return value

    @field_validator("deployment", "lease")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _SUBDOMAIN.match(value):
            raise ValueError(
                f"invalid Kubernetes name {value!r}: lowercase letters, digits, '-' and '.'"
            )
        return value

    @model_validator(mode="after")
    def _reach(self) -> KubernetesBackend:
        if (self.api_server is None) == (self.kubeconfig is None):
            raise ValueError(
                "backend.api_server or backend.kubeconfig: set exactly one (api_server with "
                "token_file and ca_file, as a service account mounts them, or a kubeconfig)"
            )
        if self.kubeconfig is not None and (self.token_file or self.ca_file):
            raise ValueError(
                "backend.token_file/ca_file go with backend.api_server; a kubeconfig "
                "carries its own credentials"
            )
        if self.api_server is not None and not self.api_server.startswith(("https://", "http://")):
            raise ValueError(
                f"backend.api_server {self.api_server!r}: write a URL like https://10.0.0.1:6443"
            )
        if not 1 <= self.lease_duration <= 3600:
            raise ValueError("backend.lease_duration: between 1s and 1h")
        if not 0 < self.timeout <= 120:
            raise ValueError("backend.timeout: above 0 and at most 2m")
        return self

    def deployment_name(self, service: str) -> str:
        return self.deployment or service

    def lease_name(self, service: str) -> str:
        return self.lease or f"skylift-{self.deployment_name(service)}"


def advisor_problem(backend: object, autoscale: object | None) -> str | None:
    """Why a service in ``mode: advisor`` is misconfigured, or None.

    The HPA skylift writes is the service's policy; the controller must not also
    scale on it, so the policy runs with ``dry_run: true`` (decide and explain only).
    """
    if not isinstance(backend, KubernetesBackend) or backend.mode != "advisor":
        return None
    if autoscale is None or not getattr(autoscale, "dry_run", False):
        return (
            "backend.mode advisor writes an HPA from the service's autoscale policy and "
            "leaves scaling to it: add `autoscale: {..., dry_run: true}` (skylift then "
            "explains but never scales)"
        )
    return None
