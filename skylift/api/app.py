"""Starlette app over a running :class:`~skylift.controller.core.Controller`.

``/livez`` and ``/readyz`` are open (they reveal nothing); everything else
needs ``Authorization: Bearer <token>``. The server binds loopback only.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from skylift.api.operator import operator_routes
from skylift.controller.core import Controller, UnknownService
from skylift.controller.history import NotAutoscaled
from skylift.controller.reads import StoreReader, StoreUnavailable
from skylift.controller.service import NotHoldable, UnknownReplica
from skylift.controller.writer import StoreWriter
from skylift.engine.schedule import Event
from skylift.model import ReplicaState
from skylift.store.history import ScalingEventExists

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
FLUSH_BEFORE_READ = 1.0
"""Seconds a listing waits for queued writes, so `scale` then `events` shows the scale."""


def create_app(
    controller: Controller,
    token: str,
    request_shutdown: Callable[[bool], Awaitable[None]],
) -> Starlette:
    """Build the API; ``request_shutdown(stop_data_plane)`` ends the controller."""

    reader = StoreReader()

    async def livez(_: Request) -> Response:
        """200 while every loop makes progress; else 503 naming the stuck ones and why."""
        live, body = controller.liveness_report()
        return JSONResponse(body, status_code=200 if live else 503)

    async def readyz(_: Request) -> Response:
        ready = controller.started
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(
            generate_latest(controller.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    async def services(_: Request) -> Response:
        return JSONResponse(controller.status())

    def listing(kind: str) -> Callable[[Request], Awaitable[Response]]:
        """GET handler for a store listing (events or decisions), newest ``limit``."""

        async def handler(request: Request) -> Response:
            service = request.query_params.get("service")
            try:
                limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
            except ValueError:
                return JSONResponse({"error": "limit must be an integer"}, status_code=400)
            read = controller.store.decisions if kind == "decisions" else controller.store.events
            try:
                rows = await reader.call(_after_flush, controller.writer, read, service, limit)
            except StoreUnavailable as exc:
                return JSONResponse({"error": str(exc)}, status_code=503)
            return JSONResponse({kind: [_event_dict(r) for r in rows]})

        return handler

    async def scale(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            body = await request.json()
            replicas = int(body["replicas"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": 'send JSON {"replicas": N} with N an integer'}, status_code=400
            )
        if replicas < 0 or replicas > 1000:
            return JSONResponse({"error": "replicas must be within 0..1000"}, status_code=400)
        try:
            applied, clamped = controller.scale(name, replicas)
        except UnknownService:
            return JSONResponse({"error": f"no service named {name!r}"}, status_code=404)
        return JSONResponse({"service": name, "desired": applied, "clamped": clamped})

    async def explain(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            return JSONResponse(controller.explain(name))
        except UnknownService:
            return JSONResponse({"error": f"no service named {name!r}"}, status_code=404)

    async def scaling_events(request: Request) -> Response:
        """GET lists config and API events; POST adds one; DELETE removes one by name."""
        name = request.path_params["name"]
        if name not in controller.config.services:
            return JSONResponse({"error": f"no service named {name!r}"}, status_code=404)
        try:
            if request.method == "GET":
                listed = await reader.call(controller.history.events, name)
                return JSONResponse({"service": name, "events": listed})
            if request.method == "DELETE":
                event = request.path_params.get("event") or request.query_params.get("name")
                if not event:
                    return JSONResponse({"error": "name the event to remove"}, status_code=400)
                if not controller.history.remove_event(name, event):
                    return JSONResponse(
                        {"error": f"service {name!r} has no API event named {event!r}"},
                        status_code=404,
                    )
                return JSONResponse({"service": name, "removed": event})
            try:
                event_model = Event.model_validate(await request.json())
            except (ValueError, ValidationError) as exc:
                return JSONResponse({"error": f"invalid event: {exc}"}, status_code=400)
            stored = controller.history.add_event(name, event_model)
            return JSONResponse({"service": name, "event": _event_dict(stored)}, status_code=201)
        except NotAutoscaled:
            return JSONResponse(
                {"error": f"service {name!r} has no autoscale policy; events need one"},
                status_code=409,
            )
        except ScalingEventExists as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except StoreUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    async def replica_hold(request: Request) -> Response:
        """POST .../replicas/{replica}/hold or /release: an operator's MAINT, persisted."""
        name, replica_id = request.path_params["name"], request.path_params["replica"]
        verb = request.path_params["verb"]
        if verb not in ("hold", "release"):
            return JSONResponse({"error": "POST .../hold or .../release"}, status_code=404)
        loop = controller.loops.get(name)
        if loop is None:
            return JSONResponse({"error": f"no service named {name!r}"}, status_code=404)
        try:
            if verb == "hold":
                replica = await loop.hold(replica_id)
            else:
                replica = await loop.release(replica_id)
        except UnknownReplica:
            return JSONResponse(
                {"error": f"service {name!r} has no replica {replica_id!r} (see `skylift status`)"},
                status_code=404,
            )
        except NotHoldable as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse(
            {
                "service": name,
                "replica": replica.id,
                "state": replica.state.value,
                "held": replica.state == ReplicaState.HELD,
            }
        )

    async def shutdown(request: Request) -> Response:
        body: dict[str, Any] = {}
        if await request.body():
            body = await request.json()
        await request_shutdown(bool(body.get("stop_data_plane", True)))
        return JSONResponse({"shutting_down": True}, status_code=202)

    app = Starlette(
        routes=[
            Route("/livez", livez),
            Route("/healthz", livez),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/api/v1/services", services),
            Route("/api/v1/events", listing("events")),
            Route("/api/v1/services/{name}/scale", scale, methods=["POST"]),
            Route("/api/v1/services/{name}/explain", explain),
            Route(
                "/api/v1/services/{name}/events",
                scaling_events,
                methods=["GET", "POST", "DELETE"],
            ),
            Route("/api/v1/services/{name}/events/{event}", scaling_events, methods=["DELETE"]),
            Route(
                "/api/v1/services/{name}/replicas/{replica}/{verb:str}",
                replica_hold,
                methods=["POST"],
            ),
            Route("/api/v1/decisions", listing("decisions")),
            Route("/api/v1/shutdown", shutdown, methods=["POST"]),
            *operator_routes(controller),
        ]
    )
    app.add_middleware(_RequireToken, token=token)
    return app


class _RequireToken:
    """ASGI middleware: every path but the open probes needs the bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = Headers(scope=scope).get("authorization", "").encode()
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"error": "missing or wrong bearer token (see <state_dir>/api-token)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _after_flush(
    writer: StoreWriter, read: Callable[..., list[Any]], service: str | None, limit: int
) -> list[Any]:
    """Let queued writes land first (briefly), then read: runs in a reader thread."""
    writer.flush(FLUSH_BEFORE_READ)
    return read(service=service, limit=limit)


def _event_dict(record: Any) -> dict[str, Any]:
    """Store records (dataclasses) as JSON-ready dicts."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    return dict(record)
