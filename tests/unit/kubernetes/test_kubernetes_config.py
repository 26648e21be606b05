"""The `backend: {kind: kubernetes}` block: how it is reached, names, bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from skylift.config.kubernetes import KubernetesBackend
from skylift.config.service import Service


def service(**backend: Any) -> Service:
    return Service.model_validate(
        {"frontend": "127.0.0.1:8080", "backend": {"kind": "kubernetes", "port": 8080, **backend}}
    )


def test_defaults_derive_deployment_and_lease_from_the_service() -> None:
    svc = service(api_server="https://10.0.0.1:6443", token_file="t", ca_file="ca.crt")
    backend = svc.backend
    assert isinstance(backend, KubernetesBackend)
    assert backend.deployment_name("web") == "web"
    assert backend.lease_name("web") == "skylift-web"
    assert backend.mode == "scale" and backend.namespace == "default"
    assert backend.lease_duration == 15.0


@pytest.mark.parametrize(
    ("backend", "says"),
    [
        ({}, "backend.api_server or backend.kubeconfig"),
        ({"api_server": "https://a", "kubeconfig": "k"}, "set exactly one"),
        ({"kubeconfig": "k", "token_file": "t"}, "token_file/ca_file go with backend.api_server"),
        ({"api_server": "10.0.0.1:6443"}, "write a URL"),
        ({"api_server": "https://a", "namespace": "Prod"}, "invalid namespace"),
        ({"api_server": "https://a", "deployment": "Web_1"}, "invalid Kubernetes name"),
        ({"api_server": "https://a", "mode": "hpa"}, "'scale' or 'advisor'"),
        ({"api_server": "https://a", "lease_duration": "2h"}, "lease_duration"),
    ],
)
def test_invalid_blocks_name_the_field_and_the_fix(backend: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        service(**backend)
