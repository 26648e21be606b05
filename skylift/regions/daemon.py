"""One region's control plane: the phase-1 controller plus the region's edge and prewarm.

``skylift up -c FILE --region NAME`` runs :func:`serve_region` in its own
process: the controller gets :func:`region_config` (its own state dir, store,
lock and ports), the edge gets :func:`edge_spec`. Nothing here calls another
region on the control path: the edge checks its peers itself, prewarm reads
the edge's view, and the start-up fence check (was this region's database
promoted away?) gives up after a short timeout.

The edge state is written to ``<region state dir>/edge.json`` (``starting``,
``running``, ``failed``, ``disabled``, ``stopped``) for `up --detach` to wait on.
``SKYLIFT_REGION_EDGE=off`` runs a region without its edge (tests of the
orchestration alone, or a host whose edge runs elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from skylift.config import LoadedConfig, SkyliftConfig
from skylift.controller.core import Controller
from skylift.controller.pause import manual_clamp
from skylift.daemon import serve
from skylift.edge.keys import JWKS_PATH, fetch_all, merge
from skylift.edge.latency import LatencyProber
from skylift.edge.runner import Edge
from skylift.lb.errors import HAProxyError
from skylift.regions.config import edge_service, edge_spec, region_config, topology_of
from skylift.regions.database import DatabaseError
from skylift.regions.edge_state import read_edge_state, write_edge_state
from skylift.regions.prewarm import HealthSource, Prewarmer
from skylift.regions.promotion import PromotionError, fence_if_superseded, superseded_by
from skylift.regions.replication_sync import keep_copies
from skylift.regions.topology_file import ENV_NAMES, TOPOLOGY_FILE, topology_document

if TYPE_CHECKING:
    from skylift.edge.spec import EdgeSpec

log = structlog.get_logger("skylift.regions.daemon")

TOKEN_KEYS = "token-keys.json"  # noqa: S105 (a file name) region -> kid -> PEM, last fetched (a restart keeps them)
KEYS_EVERY = 30.0  # seconds between two JWKS rounds once every region's keys are known
PROMOTION_WATCH_EVERY = 5.0  # seconds between two "was my database promoted away?" checks
KEYS_EARLY = 2.0  # ... and before (a platform writes its key on its first start)
EDGE_SWITCH = "SKYLIFT_REGION_EDGE"  # "off": run the region without its edge


def region_loaded(root: LoadedConfig, name: str) -> LoadedConfig:
    """The single-region config region ``name``'s controller runs, as if loaded from FILE.

    Every service's replicas are also told where the region's topology file is
    (:data:`topology_file.ENV_NAMES`), unless the config names another file.
    """
    own = region_config(root.config, name)
    plain = LoadedConfig(config=own, path=root.path)
    path = str(plain.state_dir / TOPOLOGY_FILE)
    data = own.model_dump(mode="json")
    for service in data["services"].values():
        env = service["backend"].setdefault("env", {})
        for variable in ENV_NAMES:
            env.setdefault(variable, path)
    config = SkyliftConfig.model_validate(data, context={"validated": True})
    return LoadedConfig(config=config, path=root.path)


def write_topology(root: LoadedConfig, name: str, state_dir: Path) -> Path:
    """``<region state>/topology.json``, replaced atomically (the platform reads it at start)."""
    path = state_dir / TOPOLOGY_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(topology_document(root.config, name), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def edge_enabled() -> bool:
    return os.environ.get(EDGE_SWITCH, "on").lower() not in ("off", "0", "false", "no")


class ControllerScaler:
    """Prewarm's handle on the region's controller: the manual scale path, own event."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def desired(self, service: str) -> int:
        return self.controller.loops[service].desired

    def set_desired(self, service: str, replicas: int, reason: str) -> int:
        controller = self.controller
        loop = controller.loops[service]
        applied, clamped = manual_clamp(
            replicas, controller.autoscalers.get(service), controller.ceilings.get(service)
        )
        old = loop.desired
        if applied == old:
            return applied
        loop.desired = applied
        controller.writer.set_desired(service, applied)
        controller.recorder.event(
            "prewarm",
            f"desired replicas {old} -> {applied}: {reason}" + (f" ({clamped})" if clamped else ""),
            service=service,
            old=old,
            new=applied,
            clamped=clamped,
        )
        return applied


def drain_superseded(controller: Controller, service: str) -> None:
    """Run no replica of ``service`` in a region whose database was promoted away.

    Its users live in the promoted copy now; with this region's pool empty, its
    own edge and every peer's see it down and keep serving them from the holder
    (the rules' failover), instead of failing back onto a fenced, stale database.
    Autoscaling is paused so it does not bring replicas back (resume it after the
    switchover); the configured count comes back at the first start without the
    promotion record (:func:`store_drained`).
    """
    from skylift.controller.pause import set_paused

    loop = controller.loops.get(service)
    if loop is None or loop.desired == 0:
        return
    if service in controller.autoscalers:
        set_paused(controller, service, True)
    old, loop.desired = loop.desired, 0
    controller.writer.set_desired(service, 0)
    controller.recorder.event(
        "scaled",
        f"desired replicas {old} -> 0: this region's database was promoted away",
        service=service,
        old=old,
        new=0,
    )


DRAINED = "drained-superseded"  # marker: the region's pool was emptied by a promotion


def store_drained(loaded: LoadedConfig, service: str, *, drained: bool = True) -> None:
    """Set the store's count of ``service`` before the region's controller starts.

    ``drained``: 0 (its database was promoted away: not one replica starts, so no
    edge fails back onto the fenced copy even for a moment), and a marker in the
    state dir. Not drained while the marker is there (the region was re-seeded and
    the record removed): the configured count again, and the marker goes.
    """
    from skylift.store import Store

    marker = loaded.state_dir / DRAINED
    if service not in loaded.config.services or (not drained and not marker.exists()):
        return
    configured = loaded.config.services[service].replicas
    store = Store.open(loaded.store_url)
    try:
        store.set_desired(service, 0 if drained else configured, configured=configured)
    finally:
        store.close()
    if drained:
        marker.touch()
    else:
        marker.unlink()


class RegionRuntime:
    """The region's edge and prewarm, beside its controller (a daemon ``Companion``)."""

    def __init__(
        self,
        root: LoadedConfig,
        name: str,
        *,
        with_edge: bool | None = None,
        edge_factory: Callable[[EdgeSpec], Any] | None = None,
    ) -> None:
        self.root = root
        self.edge_factory = edge_factory
        self.name = name
        self.loaded = region_loaded(root, name)
        self.with_edge = edge_enabled() if with_edge is None else with_edge
        self.edge: Any = None  # skylift.edge.runner.Edge once started
        self.tasks: list[asyncio.Task[None]] = []
        self.stop_event = asyncio.Event()
        self.edge_started = asyncio.Event()
        self.keys: dict[str, dict[str, str]] = self._cached_keys()

    @property
    def state_dir(self) -> Path:
        return self.loaded.state_dir

    def spec(self) -> EdgeSpec:
        return edge_spec(self.root.config, self.name, self.root.base_dir, self._merged_keys())

    def _cached_keys(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads((self.state_dir / TOKEN_KEYS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(r): dict(k) for r, k in data.items()} if isinstance(data, dict) else {}

    def _merged_keys(self) -> dict[str, str]:
        return dict(merge(self.keys))

    async def start(self, controller: Controller) -> None:
        self._spawn(self._watch_promotion(controller), "promotion-watch")
        if self.root.config.replication is not None:  # opt-in copies held here
            self._spawn(
                keep_copies(self.root.config, self.root.base_dir, self.name, self.stop_event),
                "replication",
            )
        if not self.with_edge:
            write_edge_state(self.state_dir, "disabled", reason=f"{EDGE_SWITCH}=off")
            return
        factory = self.edge_factory
        if factory is None:
            binary = self.root.config.haproxy.binary

            def factory(spec: EdgeSpec) -> Any:
                return Edge(spec, haproxy_binary=binary)

        self.edge = factory(self.spec())
        write_edge_state(self.state_dir, "starting")
        self._spawn(self._keep_edge(), "edge")
        self._spawn(self._keep_token_keys(), "token-keys")
        if self.root.config.edge.mode == "latency":
            self._spawn(self._probe_latency(), "latency")
        service = edge_service(self.root.config)
        if self.root.config.failover.prewarm > 0 and service in controller.loops:
            self._spawn(self._prewarm(controller, service, self.edge), "prewarm")

    def _spawn(self, coro: Any, name: str) -> None:
        """A background task whose unexpected end is logged, never lost."""
        task = asyncio.create_task(coro, name=f"{self.name}-{name}")

        def ended(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error(
                    "region_task_failed", region=self.name, task=name, error=repr(done.exception())
                )

        task.add_done_callback(ended)
        self.tasks.append(task)

    async def _watch_promotion(self, controller: Controller) -> None:
        """While running: if this region's database gets promoted away (a `region promote`
        run while this host was cut off, say), fence it as soon as that is known, so a
        healed partition never leaves two writers. Off the control path: a peer that does
        not answer only delays the news."""
        config, base = self.root.config, self.root.base_dir
        if config.regions[self.name].standby is None:
            return  # nobody can promote this region's database away
        fenced_for: float | None = None
        while not self.stop_event.is_set():
            try:
                promotion = await asyncio.to_thread(superseded_by, config, base, self.name)
                if promotion is not None and promotion.at != fenced_for:
                    await asyncio.to_thread(fence_if_superseded, config, base, self.name)
                    fenced_for = promotion.at
                    controller.recorder.event(
                        "region_superseded",
                        f"{self.name}'s database was promoted away to {promotion.holder}'s "
                        "standby: fenced read-only, and its pool drained so every edge keeps "
                        f"its users on {promotion.holder} (no failback after a promotion; "
                        "see `skylift region switchover`)",
                        level="error",
                        holder=promotion.holder,
                    )
                    drain_superseded(controller, edge_service(config))
                    (self.state_dir / DRAINED).touch()
            except (DatabaseError, PromotionError) as exc:
                log.warning("promotion_watch_failed", region=self.name, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), PROMOTION_WATCH_EVERY)

    async def _keep_edge(self) -> None:
        """Start the edge; retry (with a state the CLI shows) until it runs or we stop."""
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                await self.edge.start()
            except (HAProxyError, OSError, RuntimeError, ValueError) as exc:
                log.error("edge_start_failed", region=self.name, error=str(exc))
                write_edge_state(self.state_dir, "failed", error=str(exc)[:500])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
                delay = min(delay * 2, 15.0)
                continue
            listen = self.spec().listen
            write_edge_state(self.state_dir, "running", listen=listen)
            log.info("edge_running", region=self.name, listen=listen)
            self.edge_started.set()
            return

    async def _keep_token_keys(self) -> None:
        """Every region's JWKS -> the edge's pinned keys; a region that fails keeps its old ones.

        Each region's JWKS is asked through an edge (this one for its own region, the
        peer's for a peer) with the region as selector; an answer served by another
        region (a failover) never replaces that region's keys (``fetch_all``).
        """

        await self.edge_started.wait()
        spec = self.spec()
        edges = {self.name: spec.listen, **spec.peers}
        urls = {region: f"http://{addr}{JWKS_PATH}" for region, addr in edges.items()}
        async with httpx.AsyncClient(trust_env=False, timeout=3.0) as client:
            while not self.stop_event.is_set():
                fetched = await fetch_all(urls, self.keys, client=client)
                self.keys = {region: dict(keys) for region, keys in fetched.items()}
                await self._apply_keys()
                known = all(self.keys.get(region) for region in urls)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.stop_event.wait(), KEYS_EVERY if known else KEYS_EARLY
                    )

    async def _apply_keys(self) -> None:
        spec = self.spec()
        if dict(spec.token_keys) == dict(self.edge.spec.token_keys):
            return
        body = json.dumps(self.keys)
        tmp = self.state_dir / f"{TOKEN_KEYS}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        tmp.replace(self.state_dir / TOKEN_KEYS)
        try:
            await self.edge.apply(spec)
        except (HAProxyError, OSError, RuntimeError, ValueError) as exc:
            log.error("edge_keys_apply_failed", region=self.name, error=str(exc))
            return
        log.info("edge_token_keys", region=self.name, kids=sorted(spec.token_keys))

    async def _probe_latency(self) -> None:
        """``latency`` mode: keep the edge's nearest-region choice measured."""
        await self.edge_started.wait()
        await LatencyProber(self.edge, self.spec()).run()

    async def _prewarm(self, controller: Controller, service: str, health: HealthSource) -> None:
        await self.edge_started.wait()
        config = self.root.config
        replicas = {
            r: region_config(config, r).services[service].replicas for r in config.edged_regions
        }
        prewarmer = Prewarmer(
            self.name,
            service,
            topology_of(config),
            replicas,
            config.failover.prewarm,
            health,
            ControllerScaler(controller),
        )
        every = max(0.5, config.edge.check.inter * 2)
        await prewarmer.run(self.stop_event, every)

    async def stop(self, *, down: bool) -> None:
        self.stop_event.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if down and self.edge is not None:
            await self.edge.stop()
            write_edge_state(self.state_dir, "stopped")


async def stop_edge_offline(root: LoadedConfig, name: str) -> bool:
    """`down --region` with no controller running: stop the edge it left (True if any)."""
    if not edge_enabled():
        return False
    loaded = region_loaded(root, name)
    if not read_edge_state(loaded.state_dir):
        return False
    spec = edge_spec(root.config, name, root.base_dir)
    await Edge(spec, haproxy_binary=root.config.haproxy.binary).stop()
    write_edge_state(loaded.state_dir, "stopped")
    return True


async def serve_region(root: LoadedConfig, name: str) -> int:
    """Run region ``name``: fence its database if it was promoted away, then the controller."""
    loaded = region_loaded(root, name)
    loaded.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_topology(root, name, loaded.state_dir)
    try:
        promotion = await asyncio.to_thread(fence_if_superseded, root.config, root.base_dir, name)
    except (DatabaseError, PromotionError) as exc:
        # never a reason not to start: the region's edge serves other regions' users too
        log.warning("region_fence_check_failed", region=name, error=str(exc))
    else:
        if promotion is not None:
            log.error(
                "region_superseded",
                region=name,
                holder=promotion.holder,
                message=f"{name}'s database was promoted away to {promotion.holder}'s standby: "
                "it is fenced read-only and the region serves no user until it is re-seeded "
                "(see `skylift region switchover`)",
            )
            await asyncio.to_thread(store_drained, loaded, edge_service(root.config))
        else:
            await asyncio.to_thread(store_drained, loaded, edge_service(root.config), drained=False)
    return await serve(loaded, companions=[RegionRuntime(root, name)])
