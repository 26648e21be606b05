"""Request parsing shared by the route modules: JSON bodies, the caller, the client address."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from skylift.platform.errors import BadRequest
from skylift.platform.metrics import PlatformMetrics
from skylift.platform.runtime import Platform
from skylift.platform.tokens import AccessClaims, bearer, verify_access

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024


def platform(request: Request) -> Platform:
    value: Platform = request.app.state.platform
    return value


def metrics(request: Request) -> PlatformMetrics:
    value: PlatformMetrics = request.app.state.metrics
    return value


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("send a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


def string_field(body: dict[str, Any], name: str, max_len: int = 4096) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise BadRequest(f"{name!r} must be a non-empty string")
    return value


def credentials(body: dict[str, Any]) -> tuple[str, str]:
    """Normalised e-mail and the password, checked for shape (not strength beyond length)."""
    email = string_field(body, "email", 254).strip().lower()
    password = string_field(body, "password", MAX_PASSWORD)
    if not _EMAIL.match(email):
        raise BadRequest("'email' is not an e-mail address")
    return email, password


def client_address(request: Request) -> str:
    """The caller's address: the last X-Forwarded-For hop when the peer is a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in platform(request).settings.trusted_proxies:
        return forwarded.split(",")[-1].strip() or peer
    return peer


def caller(request: Request) -> AccessClaims:
    p = platform(request)
    token = bearer(request.headers.get("authorization"))
    return verify_access(token, p.keyring, p.settings.region)
