"""Auth and user endpoints: sign-up, login, refresh, logout, ``/me``, ``/flags``, JWKS."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skylift.platform.errors import AuthError, BadRequest, Conflict
from skylift.platform.requests import (
    MIN_PASSWORD,
    caller,
    client_address,
    credentials,
    json_object,
    metrics,
    platform,
    string_field,
)
from skylift.platform.runtime import Platform
from skylift.platform.tokens import issue_access
from skylift.platform.users import Profile


def _profile_json(profile: Profile) -> dict[str, str | None]:
    return {
        "id": profile.id,
        "email": profile.email,
        "home_region": profile.home_region,
        "display_name": profile.display_name,
    }


NO_STORE = {"Cache-Control": "no-store"}


def _token_pair_body(
    p: Platform, user_id: str, home_region: str, refresh_token: str
) -> dict[str, str | int]:
    access = issue_access(
        p.keyring,
        sub=user_id,
        home_region=home_region,
        region=p.settings.region,
        ttl=p.settings.access_ttl,
        now=p.now(),
    )
    return {
        "access_token": access,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": p.settings.access_ttl,
    }


async def signup(request: Request) -> Response:
    p = platform(request)
    email, password = credentials(await json_object(request))
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"'password' must have at least {MIN_PASSWORD} characters")
    try:
        profile = await p.users.create(email, await p.passwords.hash(password), p.settings.region)
    except Conflict:
        await p.audit("auth.signup_conflict", None, client=client_address(request))
        raise
    await p.audit("auth.signup", profile.id, client=client_address(request))
    metrics(request).auth_events.labels("signup").inc()
    return JSONResponse(_profile_json(profile), status_code=201)


async def login(request: Request) -> Response:
    p = platform(request)
    email, password = credentials(await json_object(request))
    client = client_address(request)
    await p.limiter.hit(email, client, time.time())
    found = await p.users.credentials(email)
    if not await p.passwords.verify(found.password_hash if found else None, password):
        await p.audit("auth.login_failed", found.id if found else None, client=client)
        metrics(request).auth_events.labels("login_failed").inc()
        raise AuthError("wrong e-mail or password")
    assert found is not None
    if p.passwords.needs_rehash(found.password_hash):
        await p.users.set_password_hash(found.id, await p.passwords.hash(password))
    refresh = await p.refresh.issue(found.id)
    await p.audit("auth.login", found.id, client=client)
    metrics(request).auth_events.labels("login").inc()
    return JSONResponse(_token_pair_body(p, found.id, found.home_region, refresh), headers=NO_STORE)


async def refresh(request: Request) -> Response:
    """Rotate; the answer is built first so that a replayed request can get it back."""
    p = platform(request)
    token = string_field(await json_object(request), "refresh_token", 256)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 8 <= len(idempotency_key) <= 128:
        raise BadRequest("Idempotency-Key must have 8 to 128 characters")
    user_id = await p.refresh.owner(token)
    profile = await p.users.profile(user_id) if user_id else None
    if profile is None:
        metrics(request).auth_events.labels("refresh_invalid").inc()
        raise AuthError("invalid refresh token")
    successor = p.refresh.new_token()
    answer = _token_pair_body(p, profile.id, profile.home_region, successor)
    rotation = await p.refresh.rotate(
        token, successor, idempotency_key, json.dumps(answer).encode()
    )
    if rotation.outcome == "replay" and rotation.replayed is not None:
        metrics(request).auth_events.labels("refresh_replay").inc()
        return JSONResponse(json.loads(rotation.replayed), headers=NO_STORE)
    if rotation.outcome == "reuse":
        await p.audit(
            "auth.refresh_reuse",
            rotation.user_id,
            family=rotation.family,
            client=client_address(request),
        )
        metrics(request).auth_events.labels("refresh_reuse").inc()
        raise AuthError("refresh token already used: every session of this login is revoked")
    if rotation.outcome != "ok":
        metrics(request).auth_events.labels("refresh_invalid").inc()
        raise AuthError("invalid refresh token")
    await p.audit("auth.refresh", rotation.user_id, family=rotation.family)
    metrics(request).auth_events.labels("refresh").inc()
    return JSONResponse(answer, headers=NO_STORE)


async def logout(request: Request) -> Response:
    p = platform(request)
    token = string_field(await json_object(request), "refresh_token", 256)
    rotation = await p.refresh.revoke(token)
    if rotation.outcome in ("revoked", "reuse"):
        await p.audit("auth.logout", rotation.user_id, family=rotation.family)
        metrics(request).auth_events.labels("logout").inc()
    return Response(status_code=204)


async def me(request: Request) -> Response:
    p = platform(request)
    claims = caller(request)
    if request.method == "PATCH":
        body = await json_object(request)
        name = body.get("display_name")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise BadRequest("'display_name' must be a string of at most 200 characters or null")
        profile = await p.users.update_display_name(claims.sub, name)
        if profile is not None:
            await p.audit("user.update", claims.sub, fields=["display_name"])
    else:
        profile = await p.users.profile(claims.sub)
    if profile is None:
        raise AuthError("invalid token")
    return JSONResponse(_profile_json(profile))


async def my_flags(request: Request) -> Response:
    p = platform(request)
    claims = caller(request)
    return JSONResponse({"flags": await p.flags.for_user(claims.sub)})


async def jwks(request: Request) -> Response:
    return JSONResponse(
        platform(request).keyring.jwks(), headers={"Cache-Control": "public, max-age=60"}
    )


ROUTES = [
    Route("/auth/signup", signup, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/refresh", refresh, methods=["POST"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/me", me, methods=["GET", "PATCH"]),
    Route("/flags", my_flags, methods=["GET"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
]
