"""Wires the real parts together and runs the controller with its API until a signal.

SIGTERM/SIGINT stop the controller only: replicas and HAProxy keep serving,
so upgrading or restarting skylift never drops traffic. ``skylift down``
(the API's shutdown with ``stop_data_plane``) stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from skylift.metrics.override import Without
from skylift.model import Replica
from skylift.store import Store

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


def build_controller(loaded: LoadedConfig, store: Store) -> Controller:
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
    return Controller(loaded, store, balancer, backends)


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
    engines = {n: b for n, b in controller.backends.items() if isinstance(b, ContainerStats)}
    processes = {n: r for n, r in requests.items() if n not in engines}
    sources: list[MetricSource] = [
        ProcessStatsSource(replicas, processes),
        DockerStatsSource(replicas, {n: requests[n] for n in engines if n in requests}, engines),
        HAProxyStatsSource(balancer.runtime, backend_of=backend_name),
        LatencySource(tracker, log_socket, idle_value=0.0),
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


def longest_rule(config: SkyliftConfig) -> float:
    """History the collector must keep so every `for` duration can be judged, and no
    sample expires between two decisions (the forecast's history is built from them)."""
    spans = [0.0]
    for svc in config.services.values():
        if svc.autoscale is not None:
            spans.extend(float(getattr(c, "for_", 0.0)) for c in svc.autoscale.checks)
            spans.append(svc.autoscale.interval)  # the forecast history sees every sample
    return max(spans)


async def serve(loaded: LoadedConfig) -> int:
    """Run until stopped; returns the process exit code."""
    state_dir = ensure_state_dir(loaded.state_dir)
    store = Store.open(loaded.store_url)
    try:
        with store.acquire_controller_lock(owner=f"{socket.gethostname()}:{os.getpid()}"):
            return await _serve_locked(loaded, store, state_dir.joinpath("controller.pid"))
    finally:
        store.close()


async def _serve_locked(loaded: LoadedConfig, store: Store, pid_file: os.PathLike[str]) -> int:
    controller = build_controller(loaded, store)
    token = load_or_create_token(loaded.state_dir)
    stop = asyncio.Event()
    stop_data_plane = False

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
    api_task = asyncio.create_task(server.serve(), name="api")
    cleanup = contextlib.AsyncExitStack()
    try:
        if wants_metrics(loaded):
            assert isinstance(controller.balancer, HAProxyBalancer)
            await attach_collector(controller, controller.balancer, cleanup)
        await controller.start()
        controller.recorder.event(
            "controller_started",
            f"controller pid {os.getpid()} managing {len(controller.loops)} service(s)",
            services=list(controller.loops),
        )
        await controller.run(stop)
        if stop_data_plane:
            await controller.down()
        else:
            controller.recorder.event(
                "controller_stopped",
                "controller stopped; replicas and HAProxy keep serving (`skylift down` stops them)",
            )
    finally:
        await cleanup.aclose()
        server.should_exit = True
        await asyncio.gather(api_task, return_exceptions=True)
    return 0
