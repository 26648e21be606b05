"""`skylift apply` (the pure diff and the controller applying it), scale clamps, pauses,
and replicas of services the config no longer has."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from skylift.backends.memory import MemoryBackend
from skylift.config import LoadedConfig, Service, load_config
from skylift.controller.apply import apply_config, diff_configs
from skylift.controller.budget import Ceiling
from skylift.controller.core import Controller
from skylift.controller.pause import manual_clamp, set_paused
from skylift.model import Replica, ReplicaState
from skylift.store import Store
from tests.unit.controller.fakes import Clock, FakeBalancer, RpsSource, healthy

WEB: dict[str, Any] = {
    "frontend": "127.0.0.1:9080",
    "replicas": 2,
    "backend": {"command": "app --port {port}", "ports": {"start": 20000, "end": 20099}},
    "autoscale": {
        "min": 2,
        "max": 6,
        "interval": "5s",
        "checks": [{"kind": "target", "metric": "rps", "target": 10}],
    },
}
API: dict[str, Any] = {
    "frontend": "127.0.0.1:9081",
    "replicas": 2,
    "backend": {"command": "api --port {port}", "ports": {"start": 20100, "end": 20199}},
}


def write(tmp_path: Path, services: Mapping[str, Any], **top: Any) -> LoadedConfig:
    path = tmp_path / "skylift.yaml"
    path.write_text(yaml.safe_dump({"interval": "1s", **top, "services": dict(services)}))
    return load_config(path, environ={})


def with_(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


# -- the pure diff -------------------------------------------------------------


def test_diff_lists_added_removed_and_changed_fields(tmp_path: Path) -> None:
    old = write(tmp_path, {"web": WEB, "api": API})
    worker = with_(API, frontend="127.0.0.1:9082")
    worker["backend"] = {**API["backend"], "ports": {"start": 20200, "end": 20299}}
    new_web = with_(WEB, replicas=3, health={"path": "/ready"})
    new = write(tmp_path / "..", {"web": new_web, "worker": worker}, interval="2s")
    changes = diff_configs(old, new)
    assert changes.added == ("worker",)
    assert changes.removed == ("api",)
    assert dict(changes.changed) == {"web": ("health.path", "replicas")}
    assert changes.settings == ("interval",)
    # another directory: another state dir, and the default SQLite store moves with it
    assert changes.restart_required == ("state_dir", "store.url")
    assert changes.needs_reload
    shown = changes.as_dict()
    assert shown["services"] == {"added": ["worker"], "removed": ["api"], "changed": ["web"]}
    assert shown["restart_required"] == ["state_dir", "store.url"]


def test_diff_of_identical_configs_is_empty_and_replicas_alone_need_no_reload(
    tmp_path: Path,
) -> None:
    old = write(tmp_path, {"web": WEB})
    assert diff_configs(old, old).empty
    new = write(tmp_path, {"web": with_(WEB, replicas=4)})
    changes = diff_configs(old, new)
    assert dict(changes.changed) == {"web": ("replicas",)}
    assert not changes.needs_reload  # membership goes through the runtime API


@pytest.mark.parametrize(
    ("top", "key"),
    [
        ({"api": {"listen": "127.0.0.1:9999"}}, "api.listen"),
        ({"haproxy": {"metrics": "127.0.0.1:9998"}}, "haproxy.metrics"),
        ({"store": {"url": "postgresql://u@h/db"}}, "store.url"),
        ({"state_dir": "elsewhere", "store": {"url": "sqlite:////tmp/x.db"}}, "state_dir"),
        ({"project": "other"}, "project"),
    ],
)
def test_restart_only_keys_are_named(tmp_path: Path, top: dict[str, Any], key: str) -> None:
    same_store = {"store": top["store"]} if key == "state_dir" else {}
    old = write(tmp_path, {"web": WEB}, **same_store)
    new = write(tmp_path, {"web": WEB}, **top)
    assert diff_configs(old, new).restart_required == (key,)


def test_live_haproxy_settings_reload_and_need_no_restart(tmp_path: Path) -> None:
    old = write(tmp_path, {"web": WEB})
    new = write(tmp_path, {"web": WEB}, haproxy={"timeout_client": "60s"})
    changes = diff_configs(old, new)
    assert changes.settings == ("haproxy.timeout_client",)
    assert not changes.restart_required and changes.needs_reload


# -- clamps --------------------------------------------------------------------


def test_manual_clamp_names_the_policy_and_the_budget(tmp_path: Path) -> None:
    from skylift.controller.autoscaler import Autoscaler

    policy = write(tmp_path, {"web": WEB}).config.services["web"].autoscale
    assert policy is not None
    scaler = Autoscaler("web", policy)
    applied, why = manual_clamp(50, scaler, None)
    assert applied == 6 and why is not None and "max 6" in why and "50 asked" in why
    applied, why = manual_clamp(1, scaler, None)
    assert applied == 2 and why is not None and "min 2" in why
    assert manual_clamp(4, scaler, None) == (4, None)
    applied, why = manual_clamp(50, None, Ceiling(5, "connection budget: 5 fit"))
    assert applied == 5 and why is not None and "connection budget" in why
    assert manual_clamp(50, None, None) == (50, None)


# -- the controller -------------------------------------------------------------


class ReloadingBalancer(FakeBalancer):
    """A fake balancer that records structure reloads (which services it balances)."""

    def __init__(self) -> None:
        super().__init__()
        self.reloads: list[list[str]] = []

    async def reload(self, services: Mapping[str, Service] | None = None) -> None:
        names = sorted(services or {})
        self.reloads.append(names)
        for name in list(self.servers):
            if name not in names:
                del self.servers[name]
        for name in names:
            self.servers.setdefault(name, {})


async def controller(
    loaded: LoadedConfig, store: Store, backends: dict[str, MemoryBackend]
) -> Controller:
    ctl = Controller(
        loaded, store, ReloadingBalancer(), dict(backends), clock=Clock(), probe=healthy
    )

    def backend_for(name: str, svc: Service) -> MemoryBackend:
        return backends.setdefault(name, MemoryBackend(name, first_port=21000))

    ctl.hooks.backend_for = backend_for
    ctl.hooks.orphan_backend = lambda record: backends.get(record.service)
    await ctl.start()
    for _ in range(3):
        for loop in ctl.loops.values():
            await loop.tick()
    return ctl


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(state_dir=tmp_path / "state")


async def test_scale_beyond_max_applies_max_and_names_the_clamp(
    tmp_path: Path, store: Store
) -> None:
    ctl = await controller(write(tmp_path, {"web": WEB}), store, {"web": MemoryBackend("web")})
    applied, clamped = ctl.scale("web", 50)
    assert ctl.writer.flush(10)  # store writes are write-behind: let them land
    assert applied == 6 and ctl.loops["web"].desired == 6 and store.desired("web") == 6
    assert clamped is not None and "max 6" in clamped
    await ctl.loops["web"].tick()
    assert len(ctl.backends["web"].running) == 6  # never 50 started for a decision to drain


async def test_pause_holds_survives_a_restart_and_shows(tmp_path: Path, store: Store) -> None:
    loaded = write(tmp_path, {"web": WEB})
    backend = MemoryBackend("web")
    ctl = await controller(loaded, store, {"web": backend})
    view = set_paused(ctl, "web", True)
    assert view["paused"] and view["paused_by"] == "operator"
    assert ctl.status()["services"]["web"]["autoscale"]["paused"] is True
    ctl.scale("web", 5)  # a paused service takes manual counts
    from skylift.metrics import Collector

    ctl.collector = Collector(["web"], [RpsSource(1.0)], interval=1.0, window=10.0)
    await ctl.collector.collect(ctl.clock())
    ctl._autoscale(ctl.loops["web"])
    assert ctl.loops["web"].desired == 5  # held, though 1 rps wants the minimum
    assert "paused" in ctl.explain("web")["reasons"][0]
    # a new controller on the same store finds the pause again
    again = await controller(loaded, store, {"web": backend})
    assert again.status()["services"]["web"]["autoscale"]["paused"] is True
    assert set_paused(again, "web", False)["paused"] is False
    assert store.autoscale_pauses() == {}
    assert "autoscale_paused" in [e.kind for e in store.events(limit=1000)]


async def test_apply_adds_removes_and_changes_services(tmp_path: Path, store: Store) -> None:
    backends = {"web": MemoryBackend("web"), "api": MemoryBackend("api", first_port=20100)}
    ctl = await controller(write(tmp_path, {"web": WEB, "api": API}), store, backends)
    assert len(backends["api"].running) == 2
    worker = with_(API, frontend="127.0.0.1:9082")
    worker["backend"] = {**API["backend"], "ports": {"start": 20200, "end": 20299}}
    new = write(tmp_path, {"web": with_(WEB, replicas=3), "worker": worker})

    dry = await apply_config(ctl, new, dry_run=True)
    assert dry["services"] == {"added": ["worker"], "removed": ["api"], "changed": ["web"]}
    assert not dry["applied"] and "worker" not in ctl.loops  # a dry run changes nothing

    result = await apply_config(ctl, new, dry_run=False)
    assert result["applied"]
    assert set(ctl.loops) == {"web", "worker"} and ctl.loaded is new
    assert backends["api"].running == {}  # every replica of the removed service stopped
    assert ctl.writer.flush(10)  # store writes are write-behind: let them land
    assert not [r for r in store.replicas() if r.service == "api"]
    balancer = ctl.balancer
    assert isinstance(balancer, ReloadingBalancer)
    assert balancer.reloads[-1] == ["web", "worker"]  # no leftover backend
    assert ctl.loops["web"].desired == 3
    await ctl.loops["worker"].tick()
    assert len(backends["worker"].running) == 2
    assert "api" not in ctl.status()["services"]
    kinds = [e.kind for e in store.events(limit=1000)]
    assert {"service_added", "service_removed", "config_applied"} <= set(kinds)
    assert (await apply_config(ctl, new, dry_run=False))["services"]["changed"] == []


async def test_restart_required_change_applies_nothing(tmp_path: Path, store: Store) -> None:
    ctl = await controller(write(tmp_path, {"web": WEB}), store, {"web": MemoryBackend("web")})
    before = ctl.loaded
    new = write(
        tmp_path,
        {"web": with_(WEB, replicas=4), "api": API},
        haproxy={"metrics": "127.0.0.1:9998"},
    )
    result = await apply_config(ctl, new, dry_run=False)
    assert result["restart_required"] == ["haproxy.metrics"] and not result["applied"]
    assert ctl.loaded is before and set(ctl.loops) == {"web"} and ctl.loops["web"].desired == 2


async def test_replicas_of_services_gone_from_the_config_are_stopped_at_start(
    tmp_path: Path, store: Store
) -> None:
    old = MemoryBackend("api")
    replica = await old.start("api", "api-1")
    replica.state = ReplicaState.READY
    store.upsert_replica(replica)
    gone = Replica("api-2", "api", "127.0.0.1", 20101, ReplicaState.READY, pid=99, handle={})
    store.upsert_replica(gone)
    ctl = await controller(
        write(tmp_path, {"web": WEB}), store, {"web": MemoryBackend("web"), "api": old}
    )
    assert old.running == {}
    assert ctl.writer.flush(10)  # store writes are write-behind: let them land
    assert [r.service for r in store.replicas()] == ["web", "web"]
    orphans = [e for e in store.events(limit=1000) if e.kind == "orphan_stopped"]
    assert sorted(e.data["replica"] for e in orphans) == ["api-1", "api-2"]
    assert {e.data["was_running"] for e in orphans} == {True, False}


async def test_a_structure_haproxy_refuses_applies_nothing(tmp_path: Path, store: Store) -> None:
    from skylift.controller.apply import ApplyError

    ctl = await controller(write(tmp_path, {"web": WEB}), store, {"web": MemoryBackend("web")})

    async def refuse(services: Mapping[str, Service], settings: object) -> None:
        raise RuntimeError("[ALERT] parsing: unknown keyword")

    ctl.hooks.check_balancer = refuse
    before = ctl.loaded
    new = write(tmp_path, {"web": with_(WEB, replicas=4), "api": API})
    with pytest.raises(ApplyError, match="nothing applied"):
        await apply_config(ctl, new, dry_run=False)
    assert ctl.loaded is before and set(ctl.loops) == {"web"} and ctl.loops["web"].desired == 2
