"""Run one replica: signing key, migrations, then uvicorn until SIGTERM (graceful)."""

from __future__ import annotations

from typing import Any

import structlog
import uvicorn

from skylift.platform import migrate
from skylift.platform.app import create_app
from skylift.platform.errors import POSTGRES_DOWN
from skylift.platform.keys import ensure_key
from skylift.platform.settings import PlatformSettings

log = structlog.get_logger("skylift.platform")


def serve(settings: PlatformSettings, host: str, port: int) -> None:
    key = ensure_key(settings.key_dir)
    if settings.migrate_on_start:
        try:
            migrate.upgrade(settings.database_url)
        except POSTGRES_DOWN as exc:
            # start anyway: /readyz says not ready, requests get 503 until the database is back
            log.warning(
                "migrate_skipped", reason="postgresql unreachable", error=type(exc).__name__
            )
    log.info(
        "platform_start",
        replica=settings.replica,
        region=settings.region,
        port=port,
        kid=key.kid,
        read_replica=settings.read_database_url is not None,
    )
    uvicorn.Server(server_config(create_app(None, settings), host, port)).run()


def server_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings for one replica.

    ``proxy_headers=False``: the platform reads ``X-Forwarded-For`` itself, against its
    own ``trusted_proxies`` (:func:`skylift.platform.requests.client_address`). uvicorn's
    default (on, trusting 127.0.0.1) replaced ``request.client`` with the forwarded
    client's address behind the service HAProxy on loopback, so the platform never
    saw its trusted proxy and ignored every ``X-Skylift-*`` header the edge set.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        proxy_headers=False,
    )
