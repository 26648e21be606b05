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
from collections.abc import Iterator
from pathlib import Path

import httpx
import structlog
import uvicorn

from skylift.api.app import create_app
from skylift.api.token import ensure_state_dir, load_or_create_token
from skylift.backends.base import Backend
from skylift.backends.process import ProcessBackend
from skylift.config import LoadedConfig, SkyliftConfig, split_listen
from skylift.config.docker import DockerBackend as DockerBackendConfig
from skylift.config.swarm import SwarmBackend as SwarmBackendConfig
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
from skylift.lb.balancer import HAProxyBalancer
from skylift.lb.render import backend_name
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
from skylift.metrics.override import Without
from skylift.model import Replica
from skylift.store import ControllerAlreadyRunning, Store
from skylift.store.lease import Lease, LeaseUnverified

log = structlog.get_logger("skylift.runner")

LOG_SOCKET = "log.sock"
"""HAProxy's request log (unix datagram) in the state dir, read for p95 latency."""


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the controller owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def wants_metrics(loaded: LoadedConfig) -> bool:
    return any(svc.autoscale is not None for svc in loaded.config.services.values())


def build_controller(loaded: LoadedConfig, store: Store, fence: Fence | None = None) -> Controller:
    state_dir = loaded.state_dir
    backends: dict[str, Backend] = {}
    for name, svc in loaded.config.services.items():
        if isinstance(svc.backend, DockerBackendConfig):
            # optional dependency: imported only when a service asks for it, with a clear
            # "pip install 'skylift[docker]'" message if it is missing
            from skylift.backends.docker import DockerBackend

            backends[name] = DockerBackend(
                name, svc.backend, project=loaded.config.project, base_dir=loaded.base_dir
            )
        elif isinstance(svc.backend, SwarmBackendConfig):
            from skylift.backends.swarm import SwarmBackend

            backends[name] = SwarmBackend(
                name,
                svc.backend,
                project=loaded.config.project,
                stop_grace=svc.stop_grace,
                base_dir=loaded.base_dir,
            )
        else:
            backends[name] = ProcessBackend(name, svc.backend, loaded.base_dir, state_dir)
    balancer = HAProxyBalancer(
        state_dir=state_dir,
        settings=loaded.config.haproxy,
        log_socket=state_dir / LOG_SOCKET if wants_metrics(loaded) else None,
    )
    if fence is None:
        return Controller(loaded, store, balancer, backends)
    return fenced_controller(loaded, store, balancer, backends, fence)


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


async def attach_collector(
    controller: Controller, balancer: HAProxyBalancer, cleanup: contextlib.AsyncExitStack
) -> None:
    """Metric sources for autoscaling: process stats, HAProxy stats and logs, Prometheus."""
    config = controller.config
    services = list(config.services)
    tracker = LatencyTracker(backend_map(services, backend_name), window=config.metrics.window)
    log_socket = await LogSocket.open(controller.loaded.state_dir / LOG_SOCKET, tracker)
    cleanup.callback(log_socket.close)

    def replicas(name: str) -> list[Replica]:
        return controller.loops[name].replicas()

    requests = {n: r for n, s in config.services.items() if (r := s.request) is not None}
    # containers are measured by the Engine (their cgroup), processes by psutil
    raw = {n: unfenced(b) for n, b in controller.backends.items()}
    engines = {n: b for n, b in raw.items() if isinstance(b, ContainerStats)}
    processes = {n: r for n, r in requests.items() if n not in engines}
    stats = HAProxyStatsSource(balancer.runtime, backend_of=backend_name)
    sources: list[MetricSource] = [
        ProcessStatsSource(replicas, processes),
        DockerStatsSource(replicas, {n: requests[n] for n in engines if n in requests}, engines),
        stats,
        # p95 reads 0 only when HAProxy counted no request: fails closed on a lost log
        LatencySource(tracker, log_socket, traffic=stats.requests),
    ]
    queries = {
        n: {str(metric): q for metric, q in s.prometheus.items()}
        for n, s in config.services.items()
        if s.prometheus
    }
    if queries and config.metrics.prometheus_url:
        # a metric a service takes from Prometheus is no longer read from HAProxy or psutil
        taken = {name: frozenset(q) for name, q in queries.items()}
        sources = [Without(source, taken) for source in sources]
        client = httpx.AsyncClient(
            base_url=config.metrics.prometheus_url, timeout=config.interval, trust_env=False
        )
        cleanup.push_async_callback(client.aclose)
        sources.append(PrometheusSource(client, queries))
    controller.collector = Collector(
        services,
        sources,
        interval=config.interval,
        window=config.metrics.window,
        stale_after=config.metrics.stale_after,
        retention=longest_rule(config) + config.metrics.window,
    )
    controller.metrics.registry.register(SourceHealthMetrics(controller.collector.health))


def longest_rule(config: SkyliftConfig) -> float:
    """History the collector must keep so every `for` duration can be judged, and no
    sample expires between two decisions (the forecast's history is built from them)."""
    spans = [0.0]
    for svc in config.services.values():
        if svc.autoscale is not None:
            spans.extend(float(getattr(c, "for_", 0.0)) for c in svc.autoscale.checks)
            spans.append(svc.autoscale.interval)  # the forecast history sees every sample
    return max(spans)


async def serve(loaded: LoadedConfig, *, standby: bool = False) -> int:
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
        return await _serve_locked(loaded, store, state_dir.joinpath("controller.pid"), lease)
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


async def _serve_locked(
    loaded: LoadedConfig, store: Store, pid_file: os.PathLike[str], lease: Lease
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
        )
    )
    Path(pid_file).write_text(f"{os.getpid()}\n", encoding="ascii")  # noqa: ASYNC240
    keeper = asyncio.create_task(
        keep(fence, min(loaded.config.interval, lease.window / 3), stop), name="lease"
    )
    api_task = asyncio.create_task(_serve_api(server, host, port), name="api")
    cleanup = contextlib.AsyncExitStack()
    try:
        if wants_metrics(loaded):
            balancer = unfenced_balancer(controller)
            await attach_collector(controller, balancer, cleanup)
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
        await controller.run(stop)
        if lost:
            return 1  # said by watch_lease; nothing more may be done, nor written
        if stop_data_plane:
            await controller.down()
            await asyncio.to_thread(lease.release, down=True)  # no standby restarts it all
        else:
            controller.recorder.event(
                "controller_stopped",
                "controller stopped; replicas and HAProxy keep serving (`skylift down` stops them)",
            )
    finally:
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
