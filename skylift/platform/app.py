"""Assemble the platform's ASGI app from an opened :class:`Platform`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from skylift.platform import audit_export, routes_admin, routes_auth, routes_regions
from skylift.platform.errors import (
    POSTGRES_DOWN,
    REDIS_DOWN,
    PlatformError,
    platform_error_handler,
    unavailable_handler,
)
from skylift.platform.metrics import PlatformMetrics, ReplicaMiddleware
from skylift.platform.runtime import Platform, open_platform
from skylift.platform.settings import PlatformSettings

Handler = Callable[[Request, Exception], Awaitable[Response]]


def create_app(platform: Platform | None, settings: PlatformSettings) -> Starlette:
    """The app; with ``platform=None`` the lifespan opens (and closes) one from ``settings``."""
    metrics = PlatformMetrics()
    unavailable = unavailable_handler(settings.retry_after)
    handlers: dict[Any, Handler] = {PlatformError: platform_error_handler}
    handlers.update(dict.fromkeys((*REDIS_DOWN, *POSTGRES_DOWN), unavailable))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if platform is not None:
            app.state.platform = platform
            yield
            return
        async with open_platform(settings) as opened:
            app.state.platform = opened
            yield

    app = Starlette(
        routes=[
            *routes_auth.ROUTES,
            *routes_regions.ROUTES,
            *routes_admin.ROUTES,
            *audit_export.ROUTES,
        ],
        middleware=[Middleware(ReplicaMiddleware, replica=settings.replica, metrics=metrics)],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    if platform is not None:
        app.state.platform = platform  # usable without a lifespan (in-process tests)
    return app
