"""Routes for what an operator changes on a running controller: `apply` and autoscale pause.

Kept apart from :mod:`skylift.api.app` (which adds them with one line) so the
routes of `skylift apply` and `skylift autoscale` live beside each other.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skylift.config import ConfigError, load_config
from skylift.controller.apply import ApplyError, apply_config
from skylift.controller.core import Controller, UnknownService
from skylift.controller.pause import NotAutoscaledService, set_paused


def operator_routes(controller: Controller) -> list[Route]:
    """``POST /api/v1/apply`` and ``POST /api/v1/services/{name}/autoscale``."""

    async def apply(request: Request) -> Response:
        try:
            body = await request.json()
            path = Path(str(body["path"]))
            dry_run = bool(body.get("dry_run", False))
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": 'send JSON {"path": "/abs/skylift.yaml", "dry_run": false}'},
                status_code=400,
            )
        if not path.is_absolute():
            return JSONResponse({"error": "path must be absolute"}, status_code=400)
        try:
            # read as `up` reads it: the controller's own environment applies
            loaded = load_config(path)
        except ConfigError as exc:
            issues = [{"path": i.path, "message": i.message, "hint": i.hint} for i in exc.issues]
            return JSONResponse(
                {"error": f"invalid config, nothing changed: {exc}", "issues": issues},
                status_code=422,
            )
        try:
            result = await apply_config(controller, loaded, dry_run=dry_run)
        except ApplyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return Response(json.dumps(result, default=str), media_type="application/json")

    async def autoscale(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            paused = (await request.json())["paused"]
        except (ValueError, KeyError, TypeError):
            paused = None
        if not isinstance(paused, bool):
            return JSONResponse({"error": 'send JSON {"paused": true|false}'}, status_code=400)
        try:
            return JSONResponse(set_paused(controller, name, paused))
        except UnknownService:
            return JSONResponse({"error": f"no service named {name!r}"}, status_code=404)
        except NotAutoscaledService:
            return JSONResponse(
                {"error": f"service {name!r} has no autoscale policy: nothing to pause"},
                status_code=409,
            )

    return [
        Route("/api/v1/apply", apply, methods=["POST"]),
        Route("/api/v1/services/{name}/autoscale", autoscale, methods=["POST"]),
    ]
