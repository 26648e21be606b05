"""The emulator refuses what a real apiserver refuses: stale updates, invalid objects."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.kubernetes.emulator import demo_deployment
from tests.k8s_emulator.server import Emulator, parse_selector

BASE = "/apis/apps/v1/namespaces/default/deployments"


@pytest.fixture
async def api() -> Any:
    emulator = Emulator()
    transport = httpx.ASGITransport(app=emulator.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        client.emulator = emulator  # type: ignore[attr-defined]
        yield client


def test_label_selectors() -> None:
    selects = parse_selector("app=web,tier!=db")
    assert selects({"app": "web"}) and selects({"app": "web", "tier": "fe"})
    assert not selects({"app": "web", "tier": "db"}) and not selects({})
    with pytest.raises(ValueError, match="equality only"):
        parse_selector("app in (web)")


async def test_stale_scale_update_is_a_409_and_fresh_one_applies(api: httpx.AsyncClient) -> None:
    assert (await api.post(BASE, json=demo_deployment("web", 1))).status_code == 201
    scale = (await api.get(f"{BASE}/web/scale")).json()
    assert scale["kind"] == "Scale" and scale["status"]["selector"] == "app=web"
    first = {**scale, "spec": {"replicas": 2}}
    assert (await api.put(f"{BASE}/web/scale", json=first)).status_code == 200
    stale = {**scale, "spec": {"replicas": 5}}  # same resourceVersion as before
    conflict = await api.put(f"{BASE}/web/scale", json=stale)
    assert conflict.status_code == 409 and conflict.json()["reason"] == "Conflict"
    assert (await api.get(f"{BASE}/web")).json()["spec"]["replicas"] == 2


async def test_objects_failing_the_official_schema_are_refused(api: httpx.AsyncClient) -> None:
    bad = demo_deployment("web", 1)
    bad["spec"]["replicaz"] = 3  # unknown field: strict validation refuses it
    answer = await api.post(BASE, json=bad)
    assert answer.status_code == 422 and "replicaz" in answer.json()["message"]
    assert (await api.post(BASE, json=demo_deployment("web", 1))).status_code == 201
    wrong = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web"},
        "spec": {"replicas": "two"},
    }
    assert (await api.put(f"{BASE}/web/scale", json=wrong)).status_code == 422
    assert (await api.post(BASE, json=demo_deployment("web", 1))).status_code == 409
