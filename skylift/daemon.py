"""Wires the real parts together and runs the controller with its API until a signal.

SIGTERM/SIGINT stop the controller only: replicas and HAProxy keep serving,
so upgrading or restarting skylift never drops traffic. ``skylift down``
(the API's shutdown with ``stop_data_plane``) stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import httpx
import structlog
import uvicorn

from skylift.api.app import create_app
from skylift.api.token import ensure_state_dir, load_or_create_token
from skylift.backends.base import Backend
from skylift.backends.process import ProcessBackend
from skylift.config import (
    HAProxySettings,
    LoadedConfig,
    Service,
    SkyliftConfig,
    split_listen,
)
from skylift.config import (
    ProcessBackend as ProcessBackendConfig,
)
from skylift.config.docker import DockerBackend as DockerBackendConfig
from skylift.config.kubernetes import KubernetesBackend as KubernetesBackendConfig
from skylift.config.swarm import SwarmBackend as SwarmBackendConfig
from skylift.controller.apply import STOP_GRACE
from skylift.controller.core import Controller
from skylift.controller.fence import (
    VERIFY_TIMEOUT,
    Fence,
    Fenced,
    FencedBalancer,
    fence_backend,
    fenced_store,
    keep,
    unfenced,
)
from skylift.lb.balancer import HAProxyBalancer, build_spec
from skylift.lb.render import backend_name, render_config
from skylift.metrics import (
    Collector,
    HAProxyStatsSource,
    LatencySource,
    LatencyTracker,
    LogSocket,
    MetricSource,
    ProcessStatsSource,
    PrometheusSource,
    backend_map,
)
from skylift.metrics.docker_stats import ContainerStats, DockerStatsSource
from skylift.metrics.exported import SourceHealthMetrics
from skylift.metrics.health import SourceHealth
from skylift.metrics.override import Without
from skylift.model import Replica
from skylift.store import ControllerAlreadyRunning, Store
from skylift.store.lease import Lease, LeaseUnverified

log = structlog.get_logger("skylift.runner")

LOG_SOCKET = "log.sock"
"""Where HAProxy's log ring connects (unix stream, state dir): request lines for p95."""


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the controller owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Companion(Protocol):
    """Something that runs beside one controller (a region's edge, its prewarm).

    ``start`` runs once the controller has adopted what runs; it must not raise
    for a trouble of its own (it retries in the background). ``stop`` runs when
    the controller stops; ``down`` says whether `skylift down` asked for the
    whole data plane to stop (else it keeps serving, as replicas and HAProxy do).
    """

    async def start(self, controller: Controller) -> None: ...

    async def stop(self, *, down: bool) -> None: ...


def wants_metrics(loaded: LoadedConfig) -> bool:
    return any(svc.autoscale is not None for svc in loaded.config.services.values())


def build_backend(loaded: LoadedConfig, name: str, svc: Service) -> Backend:
    """The backend of one service, as its config says (also for services `apply` adds)."""
    if isinstance(svc.backend, DockerBackendConfig):
        # optional dependency: imported only when a service asks for it, with a clear
        # "pip install 'skylift[docker]'" message if it is missing
        from skylift.backends.docker import DockerBackend

        return DockerBackend(
            name, svc.backend, project=loaded.config.project, base_dir=loaded.base_dir
        )
    if isinstance(svc.backend, SwarmBackendConfig):
        from skylift.backends.swarm import SwarmBackend

        return SwarmBackend(
            name,
            svc.backend,
            project=loaded.config.project,
            stop_grace=svc.stop_grace,
            base_dir=loaded.base_dir,
        )
    if isinstance(svc.backend, KubernetesBackendConfig):
        from skylift.backends.kubernetes import KubernetesBackend, advisor_manifest

        return KubernetesBackend(
            name,
            svc.backend,
            project=loaded.config.project,
            base_dir=loaded.base_dir,
            hpa=advisor_manifest(loaded.config, name),
        )
    return ProcessBackend(name, svc.backend, loaded.base_dir, loaded.state_dir)


def build_controller(loaded: LoadedConfig, store: Store, fence: Fence | None = None) -> Controller:
    state_dir = loaded.state_dir
    backends: dict[str, Backend] = {
        name: build_backend(loaded, name, svc) for name, svc in loaded.config.services.items()
    }
    balancer = HAProxyBalancer(
        state_dir=state_dir,
        settings=loaded.config.haproxy,
        log_socket=state_dir / LOG_SOCKET if wants_metrics(loaded) else None,
    )
    if fence is None:
        controller = Controller(loaded, store, balancer, backends)
    else:
        controller = fenced_controller(loaded, store, balancer, backends, fence)
    install_apply_hooks(controller, balancer)
    return controller


def fenced_controller(
    loaded: LoadedConfig,
    store: Store,
    balancer: HAProxyBalancer,
    backends: dict[str, Backend],
    fence: Fence,
) -> Controller:
    """The controller acts only through the fence: no action without the lease."""
    controller = Controller(
        loaded,
        fenced_store(store, fence),
        FencedBalancer(balancer, fence),
        {name: fence_backend(backend, fence) for name, backend in backends.items()},
    )
    controller.fence = fence
    return controller


def install_apply_hooks(controller: Controller, balancer: HAProxyBalancer) -> None:
    """What `skylift apply` and the orphan sweep need that only this module can build."""
    hooks = controller.hooks
    fence = controller.fence

    def backend_for(name: str, svc: Service) -> Backend:
        backend = build_backend(controller.loaded, name, svc)
        return fence_backend(backend, fence) if fence is not None else backend

    hooks.backend_for = backend_for
    hooks.orphan_backend = lambda record: orphan_backend(controller.loaded, record)

    async def reload_balancer(services: Mapping[str, Service], settings: HAProxySettings) -> None:
        balancer.settings = settings
        await balancer.reload(services)

    hooks.reload_balancer = reload_balancer

    async def check_balancer(services: Mapping[str, Service], settings: HAProxySettings) -> None:
        spec = build_spec(
            balancer.state_dir.absolute(), settings, services, {}, balancer.log_socket
        )
        await balancer.process.check(render_config(spec))

    hooks.check_balancer = check_balancer


async def stop_orphans_offline(loaded: LoadedConfig, store: Store) -> list[str]:
    """`skylift down` with no controller running: stop the replicas the store records for
    services the config no longer has (the ones of configured services are stopped by
    the caller)."""
    stopped = []
    for record in store.replicas():
        if record.service in loaded.config.services:
            continue
        backend = orphan_backend(loaded, record)
        for replica in backend.adopt([record]):
            await backend.stop(replica, STOP_GRACE)
        store.delete_replica(record.id)
        stopped.append(record.id)
    return stopped


def orphan_backend(loaded: LoadedConfig, record: Replica) -> Backend:
    """A backend able to find and stop ``record``, a replica of a service no longer
    configured. Only its stop path runs, which needs the record's handle (pid and start
    time, or container/service id) and the project's labels, never the service's own
    settings: those are placeholders."""
    handle = record.handle
    if "service_id" in handle:
        from skylift.backends.swarm import SwarmBackend

        swarm = SwarmBackendConfig(image="skylift-orphan", port=1)
        return SwarmBackend(record.service, swarm, project=loaded.config.project)
    if "container_id" in handle:
        from skylift.backends.docker import DockerBackend

        docker = DockerBackendConfig(image="skylift-orphan", port=1)
        return DockerBackend(record.service, docker, project=loaded.config.project)
    process = ProcessBackendConfig(command="skylift-orphan {port}")
    return ProcessBackend(record.service, process, loaded.base_dir, loaded.state_dir)


async def attach_collector(
    controller: Controller, balancer: HAProxyBalancer, cleanup: contextlib.AsyncExitStack
) -> None:
    """Metric sources for autoscaling: process stats, HAProxy stats and logs, Prometheus.

    The wiring stays with the controller, so `skylift apply` can make the collector
    follow services that come and go (see :class:`MetricsWiring`).
    """
    config = controller.config
    tracker = LatencyTracker(
        backend_map(config.services, backend_name), window=config.metrics.window
    )
    log_socket = await LogSocket.open(controller.loaded.state_dir / LOG_SOCKET, tracker)
    cleanup.callback(log_socket.close)
    client = None
    if config.metrics.prometheus_url:
        client = httpx.AsyncClient(
            base_url=config.metrics.prometheus_url, timeout=config.interval, trust_env=False
        )
        cleanup.push_async_callback(client.aclose)
    wiring = MetricsWiring(controller, balancer, tracker, log_socket, client)
    controller.collector = wiring.build()

    def health() -> list[SourceHealth]:  # the current collector's, across `apply` rebuilds
        collector = controller.collector
        return list(collector.health()) if collector is not None else []

    controller.metrics.registry.register(SourceHealthMetrics(health))
    controller.hooks.follow_metrics = wiring.follow


class MetricsWiring:
    """Builds the controller's collector from its current config, keeping the parts that
    must outlive a rebuild: the log socket and its latency windows, the Prometheus
    client, and the samples already collected for services that stay."""

    def __init__(
        self,
        controller: Controller,
        balancer: HAProxyBalancer,
        tracker: LatencyTracker,
        log_socket: LogSocket,
        prometheus: httpx.AsyncClient | None,
    ) -> None:
        self.controller = controller
        self.balancer = balancer
        self.tracker = tracker
        self.log_socket = log_socket
        self.prometheus = prometheus

    def build(self) -> Collector:
        controller = self.controller
        config = controller.config
        services = list(config.services)
        self.tracker.follow(backend_map(services, backend_name))

        def replicas(name: str) -> list[Replica]:
            loop = controller.loops.get(name)
            return loop.replicas() if loop is not None else []

        requests = {n: r for n, s in config.services.items() if (r := s.request) is not None}
        # containers are measured by the Engine (their cgroup), processes by psutil
        raw = {n: unfenced(b) for n, b in controller.backends.items()}
        engines = {n: b for n, b in raw.items() if isinstance(b, ContainerStats)}
        processes = {n: r for n, r in requests.items() if n not in engines}
        stats = HAProxyStatsSource(self.balancer.runtime, backend_of=backend_name)
        sources: list[MetricSource] = [
            ProcessStatsSource(replicas, processes),
            DockerStatsSource(
                replicas, {n: requests[n] for n in engines if n in requests}, engines
            ),
            stats,
            # p95 reads 0 only when HAProxy counted no request: fails closed on a lost log
            LatencySource(self.tracker, self.log_socket, traffic=stats.requests),
        ]
        queries = {
            n: {str(metric): q for metric, q in s.prometheus.items()}
            for n, s in config.services.items()
            if s.prometheus
        }
        if queries and self.prometheus is not None:
            # a metric a service takes from Prometheus is no longer read from HAProxy or psutil
            taken = {name: frozenset(q) for name, q in queries.items()}
            sources = [Without(source, taken) for source in sources]
            sources.append(PrometheusSource(self.prometheus, queries))
        return Collector(
            services,
            sources,
            interval=config.interval,
            window=config.metrics.window,
            stale_after=config.metrics.stale_after,
            retention=longest_rule(config) + config.metrics.window,
        )

    async def follow(self) -> bool:
        """After `apply`: a collector for the new service list, samples of the rest kept."""
        old = self.controller.collector
        collector = self.build()
        if old is not None:
            collector.store = old.store
        self.controller.collector = collector
        return False


async def follow_metrics_first_time(
    controller: Controller, balancer: HAProxyBalancer, cleanup: contextlib.AsyncExitStack
) -> bool:
    """`apply` made a service autoscaled where none was: open the log socket and
    collector now; HAProxy must reload to log to it (returns True)."""
    balancer.log_socket = controller.loaded.state_dir / LOG_SOCKET
    await attach_collector(controller, balancer, cleanup)
    return True


def longest_rule(config: SkyliftConfig) -> float:
    """History the collector must keep so every `for` duration can be judged, and no
    sample expires between two decisions (the forecast's history is built from them)."""
    spans = [0.0]
    for svc in config.services.values():
        if svc.autoscale is not None:
            spans.extend(float(getattr(c, "for_", 0.0)) for c in svc.autoscale.checks)
            spans.append(svc.autoscale.interval)  # the forecast history sees every sample
    return max(spans)


async def serve(
    loaded: LoadedConfig, *, standby: bool = False, companions: Sequence[Companion] = ()
) -> int:
    """Run until stopped; returns the process exit code.

    ``standby``: wait for the controller lease instead of refusing when another
    controller holds it, then take over (adopting its replicas and HAProxy).
    """
    state_dir = ensure_state_dir(loaded.state_dir)
    store = Store.open(loaded.store_url)
    lease = store.controller_lease(
        owner=f"{socket.gethostname()}:{os.getpid()}", duration=loaded.config.store.lease
    )
    marker = state_dir / f"standby-{os.getpid()}.json"
    try:
        if not await take_lease(lease, store.url, marker if standby else None):
            return 0
        return await _serve_locked(
            loaded, store, state_dir.joinpath("controller.pid"), lease, companions
        )
    finally:
        await asyncio.to_thread(lease.release)
        marker.unlink(missing_ok=True)
        store.close()


async def take_lease(lease: Lease, store_url: str, standby: Path | None) -> bool:
    """Take the lease, or (``standby``: its marker file) wait for it; False: told to stop.

    A take-over from a holder whose process is gone waits ``lease.grace`` before acting,
    so a holder that merely lost its lock connection has stopped trusting its lease.
    """
    if standby is None:
        if not await asyncio.to_thread(lease.try_take):
            holder = lease.current.holder if lease.current is not None else {}
            raise ControllerAlreadyRunning(store_url, holder)
    elif not await _wait_as_standby(lease, standby):
        return False
    if lease.grace > 0:
        log.info(
            "controller_lease_grace",
            epoch=lease.epoch,
            seconds=round(lease.grace, 1),
            message="took over from a holder whose lock is gone; waiting until it cannot "
            "still be acting",
        )
        await asyncio.sleep(lease.grace)
    await asyncio.wait_for(asyncio.to_thread(lease.renew), VERIFY_TIMEOUT)  # trusted afresh
    return True


async def _wait_as_standby(lease: Lease, marker: Path) -> bool:
    """Poll the lease until it can be taken (True) or a signal / `skylift down` says stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    every = min(1.0, lease.duration / 10)
    said: tuple[int, bool] | None = None
    while not stop.is_set():
        try:
            taken = await asyncio.wait_for(
                asyncio.to_thread(lease.try_take, standby=True), VERIFY_TIMEOUT
            )
        except (LeaseUnverified, TimeoutError) as exc:
            log.warning("standby_store_unreachable", error=str(exc) or "timeout")
            taken = False
        if taken:
            log.info(
                "standby_taking_over",
                epoch=lease.epoch,
                previous=lease.current.describe() if lease.current else None,
            )
            await _write_marker(marker, "active", lease.epoch)
            return True
        current = lease.current
        if current is not None and current.holder.get("down"):
            log.info("standby_stopping", reason="`skylift down` stopped the service")
            return False
        if current is not None and said != (current.epoch, True):
            said = (current.epoch, True)
            log.info(
                "standby_waiting",
                holder=current.describe(),
                expires_in=round(current.expires_in, 1),
                message="standby: waiting for the controller lease; the API binds once "
                "this controller is active",
            )
            await _write_marker(marker, "waiting", current.epoch)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return False


async def _write_marker(marker: Path, state: str, epoch: int | None) -> None:
    """``standby-<pid>.json`` in the state dir: what `up --standby --detach` waits for."""
    body = json.dumps({"pid": os.getpid(), "state": state, "epoch": epoch})
    await asyncio.to_thread(marker.write_text, body, "utf-8")


async def _serve_api(server: uvicorn.Server, host: str, port: int) -> None:
    """Bind the API and serve it; while the port is busy (an old controller, perhaps
    frozen, still holds it) keep trying: the controller acts meanwhile, without its API."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    said = False
    while not server.should_exit:
        try:
            sock = socket.create_server((host, port), family=family)
        except OSError as exc:
            if not said:
                log.warning("api_port_busy", listen=f"{host}:{port}", error=str(exc))
                said = True
            await asyncio.sleep(0.5)
            continue
        if said:
            log.info("api_bound", listen=f"{host}:{port}")
        await server.serve(sockets=[sock])
        return


def _tls_options(loaded: LoadedConfig) -> dict[str, str]:
    """uvicorn's TLS options when the API has a certificate (paths relative to the config)."""
    api = loaded.config.api
    if api.tls_cert_file is None or api.tls_key_file is None:
        return {}
    return {
        "ssl_certfile": str(loaded.base_dir / api.tls_cert_file),
        "ssl_keyfile": str(loaded.base_dir / api.tls_key_file),
    }


async def _serve_locked(
    loaded: LoadedConfig,
    store: Store,
    pid_file: os.PathLike[str],
    lease: Lease,
    companions: Sequence[Companion] = (),
) -> int:
    fence = Fence(lease)
    controller = build_controller(loaded, store, fence)
    token = load_or_create_token(loaded.state_dir)
    stop = asyncio.Event()
    stop_data_plane = False
    lost = watch_lease(fence, stop)

    async def request_shutdown(everything: bool) -> None:
        nonlocal stop_data_plane
        stop_data_plane = stop_data_plane or everything
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    host, port = split_listen(loaded.config.api.listen)
    server = _ApiServer(
        uvicorn.Config(
            create_app(controller, token, request_shutdown),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            **_tls_options(loaded),  # type: ignore[arg-type]
        )
    )
    Path(pid_file).write_text(f"{os.getpid()}\n", encoding="ascii")  # noqa: ASYNC240
    keeper = asyncio.create_task(
        keep(fence, min(loaded.config.interval, lease.window / 3), stop), name="lease"
    )
    api_task = asyncio.create_task(_serve_api(server, host, port), name="api")
    cleanup = contextlib.AsyncExitStack()
    started: list[Companion] = []
    try:
        balancer = unfenced_balancer(controller)
        if wants_metrics(loaded):
            await attach_collector(controller, balancer, cleanup)
        else:

            async def first_metrics() -> bool:
                if not wants_metrics(controller.loaded):
                    return False
                return await follow_metrics_first_time(controller, balancer, cleanup)

            controller.hooks.follow_metrics = first_metrics
        try:
            await controller.start()
        except Fenced:
            if not lost:
                raise
            return 1
        controller.recorder.event(
            "controller_started",
            f"controller pid {os.getpid()} managing {len(controller.loops)} service(s)",
            services=list(controller.loops),
        )
        for companion in companions:
            await companion.start(controller)
        started.extend(companions)
        await controller.run(stop)
        if lost:
            return 1  # said by watch_lease; nothing more may be done, nor written
        if stop_data_plane:
            for companion in started:  # the edge stops taking traffic before replicas go
                await companion.stop(down=True)
            started.clear()
            await controller.down()
            await asyncio.to_thread(lease.release, down=True)  # no standby restarts it all
        else:
            controller.recorder.event(
                "controller_stopped",
                "controller stopped; replicas and HAProxy keep serving (`skylift down` stops them)",
            )
    finally:
        for companion in started:
            await companion.stop(down=False)
        await cleanup.aclose()
        server.should_exit = True
        keeper.cancel()
        await asyncio.gather(api_task, keeper, return_exceptions=True)
        await controller.close()  # queued store writes land (bounded) before the lock goes
    return 0


def unfenced_balancer(controller: Controller) -> HAProxyBalancer:
    balancer = controller.balancer
    inner = balancer.inner if isinstance(balancer, FencedBalancer) else balancer
    assert isinstance(inner, HAProxyBalancer)
    return inner


def watch_lease(fence: Fence, stop: asyncio.Event) -> list[str]:
    """Stop the controller the moment its lease is found lost; the list gets the reason."""
    lost: list[str] = []

    def on_lost(reason: str) -> None:
        lost.append(reason)
        log.error(
            "controller_lease_lost",
            pid=os.getpid(),
            epoch=fence.epoch,
            reason=reason,
            message="another controller took over: this one acts on nothing and exits (1)",
        )
        stop.set()

    fence.on_lost.append(on_lost)
    return lost
