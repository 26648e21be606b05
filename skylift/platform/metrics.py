"""Prometheus metrics of one replica: request durations by route template and status class."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_KNOWN = frozenset(
    {
        "/auth/signup",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/me",
        "/me/failover",
        "/internal/directory",
        "/flags",
        "/.well-known/jwks.json",
        "/admin/audit",
        "/admin/flags",
        "/livez",
        "/readyz",
        "/healthz",
        "/metrics",
    }
)


def route_label(path: str) -> str:
    """A bounded label: unknown paths share one value."""
    if path in _KNOWN:
        return path
    if path.startswith("/admin/flags/"):
        return "/admin/flags/{name}"
    return "other"


class PlatformMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "skylift_platform_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route", "code"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.auth_events = Counter(
            "skylift_platform_auth_events_total",
            "Auth outcomes (login, login_failed, refresh, refresh_reuse, ...)",
            ["event"],
            registry=self.registry,
        )


class ReplicaMiddleware:
    """Names the replica in ``X-Replica`` and times every request."""

    def __init__(self, app: ASGIApp, replica: str, metrics: PlatformMetrics) -> None:
        self.app, self.replica, self.metrics = app, replica.encode(), metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-replica", self.replica)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.duration.labels(
                scope["method"], route_label(scope["path"]), f"{status // 100}xx"
            ).observe(time.perf_counter() - start)
