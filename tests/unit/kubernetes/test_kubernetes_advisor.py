"""``mode: advisor``: the leading controller writes the service's HPA (the export's
manifest) into the cluster; the in-process API emulator validates it (strict schema)."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from pydantic import ValidationError

from skylift.backends.kubernetes import KubernetesBackend, NotLeader, advisor_manifest
from skylift.config.kubernetes import KubernetesBackend as KubernetesBackendConfig
from skylift.config.root import SkyliftConfig
from tests.integration.kubernetes.emulator import demo_deployment
from tests.k8s_emulator.server import Emulator

POLICY = {
    "min": 1,
    "max": 4,
    "dry_run": True,
    "checks": [{"kind": "target", "metric": "rps", "target": 5.0}],
}
HPAS = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"


def config(mode: str = "advisor", **autoscale: Any) -> SkyliftConfig:
    backend = {"kind": "kubernetes", "api_server": "http://emulator", "port": 8080, "mode": mode}
    return SkyliftConfig.model_validate(
        {
            "services": {
                "web": {
                    "frontend": "127.0.0.1:8080",
                    "backend": backend,
                    "autoscale": {**POLICY, **autoscale},
                }
            }
        }
    )


def backend_on(emulator: Emulator, cfg: SkyliftConfig, identity: str) -> KubernetesBackend:
    backend_cfg = cfg.services["web"].backend
    assert isinstance(backend_cfg, KubernetesBackendConfig)

    def client() -> AsyncClient:
        return AsyncClient(
            KubeConfig.from_one(cluster=Cluster(server="http://emulator"), user=User()),
            namespace="default",
            transport=httpx2.ASGITransport(app=emulator.app()),
        )

    return KubernetesBackend(
        "web",
        backend_cfg,
        project="p",
        identity=identity,
        client_factory=client,
        hpa=advisor_manifest(cfg, "web"),
    )


async def test_the_leader_writes_the_hpa_and_a_standby_does_not() -> None:
    emulator = Emulator()
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator.app()), base_url="http://emulator"
    )
    created = await api.post(
        "/apis/apps/v1/namespaces/default/deployments", json=demo_deployment("web", 2)
    )
    assert created.status_code == 201
    cfg = config()
    leader, standby = backend_on(emulator, cfg, "a"), backend_on(emulator, cfg, "b")
    await leader.refresh()
    with pytest.raises(NotLeader, match="held by 'a'"):
        await standby.refresh()
    hpas = (await api.get(HPAS)).json()["items"]
    assert [h["metadata"]["name"] for h in hpas] == ["web"]
    assert hpas[0]["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
    }
    assert hpas[0]["spec"]["maxReplicas"] == 4
    assert (
        sum(c.startswith("POST ") and "horizontalpodautoscalers" in c for c in emulator.calls) == 1
    )
    await leader.refresh()  # renewing: the HPA is written once per leadership
    with pytest.raises(NotLeader):
        await standby.refresh()
    assert (
        sum(c.startswith(("POST ", "PUT ")) and "horizontalpod" in c for c in emulator.calls) == 1
    )
    assert not any(c.endswith("/scale") for c in emulator.calls)  # advisor: never scaled
    assert emulator.invalid == []


def test_scale_mode_writes_no_hpa_and_advisor_needs_dry_run() -> None:
    assert advisor_manifest(config("scale", dry_run=False), "web") is None
    with pytest.raises(ValidationError, match="dry_run: true"):
        config(dry_run=False)
