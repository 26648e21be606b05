"""Admin endpoints (audit log by time range, feature flags) and operations endpoints.

Admin calls need ``Authorization: Bearer <admin token>``, the token read from
``SKYLIFT_PLATFORM_ADMIN_TOKEN_FILE``; without that file they are closed (403).
Every admin action is itself written to the audit log.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skylift.platform import audit
from skylift.platform.errors import POSTGRES_DOWN, REDIS_DOWN, AuthError, BadRequest, Forbidden
from skylift.platform.flags import Flag, percent_to_bp
from skylift.platform.requests import client_address, json_object, metrics, platform
from skylift.platform.tokens import bearer

NAME_MAX = 64
DEPENDENCY_DOWN: tuple[type[Exception], ...] = (*REDIS_DOWN, *POSTGRES_DOWN, TimeoutError)


def _require_admin(request: Request) -> None:
    expected = platform(request).settings.admin_token()
    if expected is None:
        raise Forbidden("admin API disabled: set SKYLIFT_PLATFORM_ADMIN_TOKEN_FILE")
    given = bearer(request.headers.get("authorization"))
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise AuthError("invalid admin token")


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def audit_range(request: Request) -> Response:
    _require_admin(request)
    p = platform(request)
    since, until = _time(request, "since"), _time(request, "until")
    try:
        limit = min(10_000, max(1, int(request.query_params.get("limit", "1000"))))
    except ValueError:
        raise BadRequest("'limit' must be an integer") from None
    async with p.db.read() as conn:
        records = await audit.read_range(conn, since, until, limit)
    await p.audit(
        "admin.audit_read",
        "admin",
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        client=client_address(request),
    )
    return JSONResponse({"records": [r.to_json() for r in records]})


async def list_flags(request: Request) -> Response:
    _require_admin(request)
    flags = await platform(request).flags.all()
    return JSONResponse(
        {
            "flags": [
                {
                    "name": f.name,
                    "enabled": f.enabled,
                    "rollout_percent": f.rollout_bp / 100,
                    "description": f.description,
                }
                for f in flags.values()
            ]
        }
    )


async def put_flag(request: Request) -> Response:
    _require_admin(request)
    p = platform(request)
    name = request.path_params["name"]
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > NAME_MAX:
        raise BadRequest("flag names use letters, digits, '-' and '_' (max 64)")
    body = await json_object(request)
    enabled, percent = body.get("enabled", True), body.get("rollout_percent", 100)
    description = body.get("description", "")
    if not isinstance(enabled, bool) or not isinstance(description, str):
        raise BadRequest("'enabled' must be a boolean and 'description' a string")
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise BadRequest("'rollout_percent' must be a number within 0..100")
    try:
        flag = Flag(name, enabled, percent_to_bp(float(percent)), description)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    await p.flags.put(flag)
    await p.audit(
        "admin.flag_set",
        "admin",
        flag=name,
        enabled=enabled,
        rollout_bp=flag.rollout_bp,
        client=client_address(request),
    )
    return JSONResponse(
        {"name": name, "enabled": enabled, "rollout_percent": flag.rollout_bp / 100}
    )


async def livez(_: Request) -> Response:
    """The process answers; dependencies are /readyz's business (a dead Redis is no restart)."""
    return JSONResponse({"live": True})


async def readyz(request: Request) -> Response:
    p = platform(request)
    checks: dict[str, bool] = {}

    async def probe_redis() -> None:
        checks["redis"] = bool(await p.redis.ping())

    async def probe_db() -> None:
        async with p.db.write() as conn:
            await conn.execute("SELECT 1")
        if p.db.replica is not None:
            async with p.db.read() as conn:
                await conn.execute("SELECT 1")
        checks["postgresql"] = True

    for name, probe in (("redis", probe_redis), ("postgresql", probe_db)):
        try:
            await asyncio.wait_for(probe(), timeout=p.settings.pool_timeout + 1)
        except DEPENDENCY_DOWN:
            checks[name] = False
    ready = all(checks.values())
    headers = {} if ready else {"Retry-After": str(p.settings.retry_after)}
    body: dict[str, object] = {"ready": ready, "checks": checks}
    if p.regional is not None:
        # informative only: a region must serve its own users while its peers are down
        body["region"] = p.regional.region
        body["peer_keys"] = p.regional.peer_keys.known()
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


async def metrics_endpoint(request: Request) -> Response:
    # scraped on the replica's own port; not served through the load balancer
    if request.headers.get("x-forwarded-for"):
        return JSONResponse({"error": "not found"}, status_code=404)
    return Response(generate_latest(metrics(request).registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/admin/audit", audit_range, methods=["GET"]),
    Route("/admin/flags", list_flags, methods=["GET"]),
    Route("/admin/flags/{name}", put_flag, methods=["PUT"]),
    Route("/livez", livez, methods=["GET"]),
    Route("/healthz", livez, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
]
