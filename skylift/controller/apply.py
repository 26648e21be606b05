"""``skylift apply``: a changed config applied to the running controller, live.

Two halves, as everywhere in skylift: :func:`diff_configs` is pure (two
configs in, a :class:`ChangeSet` out, unit tested), and :func:`apply_config`
is the edge that acts on it: new services get a backend, a loop and an
HAProxy frontend/backend; removed ones are drained and stopped and leave no
backend behind; changed ones take their new spec, policy and count. HAProxy's
structure changes through its validated hitless reload; membership keeps going
through the runtime API.

Keys that only a restart can change (where the API listens, the state dir,
the store, the project, HAProxy's own listeners, the metric collector's
settings) are refused by name, and then nothing is applied.

:func:`stop_orphans` stops replicas the store still records for services the
config no longer has (at start, on ``apply`` and on ``down``), so none is
left running forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from skylift.config import HAProxySettings, LoadedConfig, Service
from skylift.controller.autoscaler import Autoscaler
from skylift.controller.budget import ceiling_of
from skylift.controller.crash import CrashTracker
from skylift.controller.history import as_engine_event, measured_startup, replay_span
from skylift.controller.pause import restore_pauses
from skylift.controller.protocols import Backend
from skylift.controller.service import ServiceLoop
from skylift.model import Replica, ReplicaState

if TYPE_CHECKING:
    from skylift.controller.core import Controller

log = structlog.get_logger("skylift.controller")

#: Top-level keys (or dotted sub-keys) a running controller cannot take over.
RESTART_KEYS = (
    "api",
    "state_dir",
    "store",
    "project",
    "haproxy.metrics",
    "haproxy.binary",
    "metrics",
)
#: Service fields that change HAProxy's rendered structure (a reload, not the runtime API).
STRUCTURAL_FIELDS = ("frontend", "health.", "slowstart")

STOP_GRACE = 10.0
"""SIGTERM to SIGKILL for a replica of a service the config no longer has."""


class ApplyError(RuntimeError):
    """The change cannot be applied as asked; the message says what to do."""


@runtime_checkable
class Reloadable(Protocol):
    """A balancer whose structure (its services) can change with a hitless reload."""

    async def reload(self, services: Mapping[str, Service] | None = None) -> None: ...


@dataclass
class ApplyHooks:
    """What only the composition root (``skylift.daemon``) knows how to build."""

    backend_for: Callable[[str, Service], Backend] | None = None
    """a backend for a service added (or whose backend changed) by ``apply``"""
    orphan_backend: Callable[[Replica], Backend | None] | None = None
    """a backend able to stop a recorded replica whose service the config lacks"""
    reload_balancer: Callable[[Mapping[str, Service], HAProxySettings], Awaitable[None]] | None = (
        None
    )
    """re-render HAProxy for these services and settings, validated, hitless"""
    check_balancer: Callable[[Mapping[str, Service], HAProxySettings], Awaitable[None]] | None = (
        None
    )
    """validate the structure a reload would install (``haproxy -c``) without installing it;
    raises with HAProxy's message"""
    follow_metrics: Callable[[], Awaitable[bool]] | None = None
    """make the metric collector follow the current config; True if HAProxy must reload"""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """one apply at a time"""


# -- the pure half -------------------------------------------------------------


@dataclass(frozen=True)
class ChangeSet:
    """What differs between the running config and a new one."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """service -> the dotted fields that changed (``replicas``, ``health.path``, ...)"""
    settings: tuple[str, ...] = ()
    """top-level keys applied live (``interval``, ``haproxy.timeout_client``, ...)"""
    restart_required: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.settings)

    @property
    def needs_reload(self) -> bool:
        """HAProxy's structure changes: services come or go, binds, checks or timeouts."""
        if self.added or self.removed or any(s.startswith("haproxy.") for s in self.settings):
            return True
        return any(
            f == s or f.startswith(s)
            for fields in self.changed.values()
            for f in fields
            for s in STRUCTURAL_FIELDS
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "services": {
                "added": list(self.added),
                "removed": list(self.removed),
                "changed": sorted(self.changed),
            },
            "fields": {name: list(fields) for name, fields in sorted(self.changed.items())},
            "settings": list(self.settings),
            "restart_required": list(self.restart_required),
        }


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like trees differ (a whole list counts as one value)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}{key}"
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(changed_paths(old[key], new[key], f"{path}."))
        return out
    return [] if old == new else [prefix.rstrip(".") or "(root)"]


def diff_configs(old: LoadedConfig, new: LoadedConfig) -> ChangeSet:
    """Pure: the running config against a new one, as a change set."""
    a, b = old.config, new.config
    added = tuple(sorted(set(b.services) - set(a.services)))
    removed = tuple(sorted(set(a.services) - set(b.services)))
    changed = {
        name: tuple(fields)
        for name in sorted(set(a.services) & set(b.services))
        if (
            fields := changed_paths(
                a.services[name].model_dump(mode="json"), b.services[name].model_dump(mode="json")
            )
        )
    }
    top_old = a.model_dump(mode="json", exclude={"services"})
    top_new = b.model_dump(mode="json", exclude={"services"})
    # where the state dir and the default store land depends on the file's place too
    top_old["state_dir"], top_new["state_dir"] = str(old.state_dir), str(new.state_dir)
    top_old["store"]["url"], top_new["store"]["url"] = old.store_url, new.store_url
    restart: list[str] = []
    settings: list[str] = []
    for path in changed_paths(top_old, top_new):
        needs = any(path == k or path.startswith(f"{k}.") for k in RESTART_KEYS)
        (restart if needs else settings).append(path)
    return ChangeSet(added, removed, changed, tuple(settings), tuple(restart))


# -- the edge: acting on a change set --------------------------------------------


async def apply_config(ctl: Controller, new: LoadedConfig, *, dry_run: bool) -> dict[str, Any]:
    """Diff ``new`` against the running config and, unless ``dry_run``, apply it.

    Refused (nothing applied) when a restart-only key changed. Returns the
    change set with ``applied`` and, once applied, what was done.
    """
    async with ctl.hooks.lock:
        changes = diff_configs(ctl.loaded, new)
        out = {**changes.as_dict(), "applied": False, "dry_run": dry_run}
        if dry_run or changes.restart_required or changes.empty:
            return out
        if not ctl.started:
            raise ApplyError("the controller is still starting: apply again in a moment")
        if (changes.added or _backend_changed(changes)) and ctl.hooks.backend_for is None:
            raise ApplyError("this controller cannot build backends for new services")
        if changes.needs_reload and ctl.hooks.check_balancer is not None:
            services = {**ctl.config.services, **new.config.services}
            try:
                await ctl.hooks.check_balancer(services, new.config.haproxy)
            except Exception as exc:  # HAProxy refuses the structure: nothing changed yet
                raise ApplyError(
                    f"HAProxy refuses the new structure, nothing applied: {exc}"
                ) from exc
        try:
            out["done"] = await _apply(ctl, new, changes)
        except Exception as exc:  # part of it may be in place: said, not hidden
            ctl.recorder.event(
                "config_apply_failed",
                f"applying {new.path} failed part-way: {exc!r}; fix the cause and apply again, "
                "or restart the controller (it reads the file as `up` does)",
                level="error",
            )
            raise ApplyError(f"apply failed part-way: {exc}") from exc
        out["applied"] = True
        return out


async def _apply(ctl: Controller, new: LoadedConfig, changes: ChangeSet) -> list[str]:
    old = ctl.loaded
    done: list[str] = []
    removed_specs = {name: old.config.services[name] for name in changes.removed}
    ctl.loaded, ctl.config = new, new.config
    for name, fields in changes.changed.items():
        done.extend(await _change_service(ctl, name, fields))
    added_loops = [await _add_service(ctl, name) for name in changes.added]
    reload_metrics = False
    if ctl.hooks.follow_metrics is not None:
        had_collector = ctl.collector is not None
        reload_metrics = await ctl.hooks.follow_metrics()
        if not had_collector and ctl.collector is not None and ctl.running is not None:
            stop, tasks = ctl.running
            tasks.append(asyncio.create_task(ctl._run_collector(stop), name="collector"))
    if changes.needs_reload or reload_metrics:
        # removed services stay in HAProxy until their replicas are drained
        await _reload(ctl, {**removed_specs, **new.config.services}, new.config.haproxy)
        done.append("HAProxy reloaded (validated, hitless)")
    for loop in added_loops:
        ctl.last_tick[loop.name] = ctl.clock()
        ctl.spawn_service(loop)
        done.append(f"service {loop.name} started")
    if changes.removed:
        await asyncio.gather(*(_remove_service(ctl, name) for name in changes.removed))
        await _reload(ctl, new.config.services, new.config.haproxy)
        done.extend(f"service {name} drained, stopped and removed" for name in changes.removed)
    if changes.settings:
        done.append("settings applied: " + ", ".join(changes.settings))
    ctl.recorder.event(
        "config_applied",
        f"config {new.path} applied: "
        + "; ".join(
            part
            for part in (
                f"added {', '.join(changes.added)}" if changes.added else "",
                f"removed {', '.join(changes.removed)}" if changes.removed else "",
                f"changed {', '.join(changes.changed)}" if changes.changed else "",
                f"settings {', '.join(changes.settings)}" if changes.settings else "",
            )
            if part
        ),
        **changes.as_dict()["services"],
        fields={k: list(v) for k, v in changes.changed.items()},
    )
    return done


def _backend_changed(changes: ChangeSet) -> bool:
    return any(f.startswith("backend") for fields in changes.changed.values() for f in fields)


async def _reload(
    ctl: Controller, services: Mapping[str, Service], settings: HAProxySettings
) -> None:
    if ctl.hooks.reload_balancer is not None:
        await ctl.hooks.reload_balancer(services, settings)
    elif isinstance(ctl.balancer, Reloadable):
        await ctl.balancer.reload(services)


def _desired_for(ctl: Controller, name: str, configured: int) -> int:
    autoscaler = ctl.autoscalers.get(name)
    if autoscaler is not None:
        return autoscaler.clamp(configured)
    ceiling = ctl.ceilings.get(name)
    return ceiling.cap(configured) if ceiling is not None else configured


async def _new_autoscaler(ctl: Controller, name: str, svc: Service) -> None:
    """(Re)build the service's autoscaler: API events, forecast history and pause restored."""
    ctl.history.flush(time.time(), everything=True)  # the old one's buckets first
    ctl.autoscalers.pop(name, None)
    if svc.autoscale is None:
        return
    autoscaler = Autoscaler(name, svc.autoscale, ceiling=ctl.ceilings.get(name))
    history = ctl.store.history
    events = await asyncio.to_thread(history.events, name)
    autoscaler.set_events([as_engine_event(e) for e in events])
    cf, metric = autoscaler.compiled.forecast, autoscaler.forecast_metric
    if cf is not None and metric is not None:
        since = time.time() - replay_span(cf)
        buckets = await asyncio.to_thread(history.load, name, metric, since=since)
        startup = await asyncio.to_thread(measured_startup, ctl.store, name)
        autoscaler.restore(buckets, startup)
    ctl.autoscalers[name] = autoscaler
    restore_pauses(ctl)


async def _change_service(ctl: Controller, name: str, fields: Sequence[str]) -> list[str]:
    svc = ctl.config.services[name]
    loop = ctl.loops[name]
    done: list[str] = []
    old_kind = loop.spec.backend.kind
    loop.spec = svc
    if any(f.startswith("restart.") for f in fields):
        loop.crash = CrashTracker(svc.restart)
    if any(f.startswith("backend") for f in fields):
        done.append(await _swap_backend(ctl, loop, svc, old_kind))
    policy_changed = any(f.startswith(("autoscale", "database")) for f in fields)
    if policy_changed:
        ceiling = ceiling_of(svc)
        if ceiling is None:
            ctl.ceilings.pop(name, None)
        else:
            ctl.ceilings[name] = ceiling
        await _new_autoscaler(ctl, name, svc)
        done.append(f"{name}: scaling policy replaced")
    if "replicas" in fields or policy_changed:
        if "replicas" in fields:
            desired = _desired_for(ctl, name, svc.replicas)
        else:
            desired = _desired_for(ctl, name, loop.desired)
        old = loop.desired
        loop.desired = desired
        await asyncio.to_thread(ctl.store.set_desired, name, desired, configured=svc.replicas)
        loop.wake.set()
        if old != desired:
            done.append(f"{name}: desired replicas {old} -> {desired}")
    ctl.recorder.event(
        "service_changed",
        f"{name}: applied changes to {', '.join(fields)}",
        service=name,
        fields=list(fields),
    )
    return done


async def _swap_backend(ctl: Controller, loop: ServiceLoop, svc: Service, old_kind: str) -> str:
    """New replicas use the new backend settings; running ones are kept (adopted)."""
    assert ctl.hooks.backend_for is not None
    backend = ctl.hooks.backend_for(loop.name, svc)
    if svc.backend.kind != old_kind:
        # the new kind cannot stop the old kind's replicas: stop them with the old one first
        desired = loop.desired
        await loop.stop_all()
        loop.desired = desired
        loop.backend = backend
        ctl.backends = {**ctl.backends, loop.name: backend}
        return f"{loop.name}: backend {old_kind} -> {svc.backend.kind}; replicas restarted"
    await asyncio.to_thread(backend.adopt, loop.replicas())  # Engine calls for containers
    loop.backend = backend
    ctl.backends = {**ctl.backends, loop.name: backend}
    return f"{loop.name}: backend settings apply to new replicas (running ones kept)"


async def _add_service(ctl: Controller, name: str) -> ServiceLoop:
    assert ctl.hooks.backend_for is not None
    svc = ctl.config.services[name]
    backend = ctl.hooks.backend_for(name, svc)
    ceiling = ceiling_of(svc)
    if ceiling is not None:
        ctl.ceilings[name] = ceiling
    await _new_autoscaler(ctl, name, svc)
    records = await asyncio.to_thread(ctl.store.replicas, service=name)
    alive = await asyncio.to_thread(backend.adopt, records)
    for record in records:
        if record.id not in {r.id for r in alive}:
            await asyncio.to_thread(ctl.store.delete_replica, record.id)
    desired = await asyncio.to_thread(ctl._initial_desired, name)
    loop = ServiceLoop(
        name,
        svc,
        backend,
        ctl.balancer,
        ctl.store,
        ctl.recorder,
        desired=desired,
        clock=ctl.clock,
        probe=ctl._probe,
    )
    loop.adopt(alive)
    ctl.loops[name] = loop
    ctl.backends = {**ctl.backends, name: backend}
    ctl.recorder.event(
        "service_added",
        f"service {name} added by apply: {desired} replica(s) on {svc.frontend}",
        service=name,
        desired=desired,
    )
    return loop


async def _remove_service(ctl: Controller, name: str) -> None:
    """End the service's tasks, drain and stop every replica, forget the service."""
    loop = ctl.loops[name]
    if ctl.running is not None:
        _, tasks = ctl.running
        mine = [t for t in tasks if t.get_name() in (f"service-{name}", f"events-{name}")]
        for task in mine:
            task.cancel()
        await asyncio.gather(*mine, return_exceptions=True)
        for task in mine:
            tasks.remove(task)
    ctl.liveness.forget(f"service loop {name!r}")  # ended on purpose: not a stuck loop
    await loop.stop_all()
    left = [r for r in loop.replicas() if r.state != ReplicaState.STOPPED]
    await loop.close()
    ctl.loops.pop(name, None)
    ctl.last_tick.pop(name, None)
    ctl.ceilings.pop(name, None)
    if name in ctl.autoscalers:
        ctl.history.flush(time.time(), everything=True)
        ctl.autoscalers.pop(name, None)
    ctl.backends = {n: b for n, b in ctl.backends.items() if n != name}
    _forget_gauges(ctl, name)
    if left:
        ctl.recorder.event(
            "service_remove_incomplete",
            f"service {name} removed, but {len(left)} replica(s) did not stop: "
            f"{', '.join(r.id for r in left)}; retried at the next start and by `skylift down`",
            service=name,
            level="error",
            replicas=[r.id for r in left],
        )
    ctl.recorder.event(
        "service_removed",
        f"service {name} removed by apply: replicas drained and stopped",
        service=name,
    )


def _forget_gauges(ctl: Controller, name: str) -> None:
    """A removed service's gauges leave /metrics (its counters stay: they are history)."""
    m = ctl.metrics
    gauges = (
        m.replicas_desired,
        m.replicas_ready,
        m.replicas_starting,
        m.crash_loop,
        m.last_tick,
        m.recommended,
        m.forecast_replicas,
        m.forecast_history,
    )
    for gauge in gauges:
        with contextlib.suppress(KeyError):  # never exported for this service
            gauge.remove(name)


# -- replicas of services the config no longer has -------------------------------


async def stop_orphans(ctl: Controller) -> list[str]:
    """Stop every recorded replica whose service is not in the config; one event each.

    Their HAProxy backend is already gone (the balancer renders only the
    config's services), so there is no traffic left to drain. They stop
    concurrently; one that cannot be stopped stays recorded and is retried at
    the next start and by ``skylift down``.
    """
    records = await asyncio.to_thread(ctl.store.replicas)
    orphans = [r for r in records if r.service not in ctl.config.services]
    stopped = await asyncio.gather(*(_stop_orphan(ctl, record) for record in orphans))
    return [record.id for record, done in zip(orphans, stopped, strict=True) if done]


async def _stop_orphan(ctl: Controller, record: Replica) -> bool:
    backend = ctl.hooks.orphan_backend(record) if ctl.hooks.orphan_backend else None
    if backend is None:
        ctl.recorder.event(
            "orphan_unmanaged",
            f"{record.id} of {record.service!r} (no longer in the config) cannot be "
            "stopped by this controller: stop it by hand",
            service=record.service,
            level="error",
            replica=record.id,
        )
        return False
    try:
        alive = await asyncio.to_thread(backend.adopt, [record])
        code = await backend.stop(alive[0], STOP_GRACE) if alive else None
    except Exception as exc:  # kept in the store: retried at the next start or down
        ctl.recorder.event(
            "orphan_stop_failed",
            f"cannot stop {record.id} of removed service {record.service!r}: {exc}; "
            "retried at the next start and by `skylift down`",
            service=record.service,
            level="error",
            replica=record.id,
        )
        return False
    await asyncio.to_thread(ctl.store.delete_replica, record.id)
    ctl.recorder.event(
        "orphan_stopped",
        f"{record.id} (pid {record.pid}) of {record.service!r}, a service no longer in the "
        + ("config, stopped" if alive else "config, was already gone; record removed"),
        service=record.service,
        level="warning",
        replica=record.id,
        exit_code=code,
        was_running=bool(alive),
    )
    return True
