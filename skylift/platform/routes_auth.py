"""Auth and user endpoints: sign-up, login, refresh, logout, ``/me``, ``/flags``, JWKS."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skylift.platform import directory, peers
from skylift.platform.errors import AuthError, BadRequest, Conflict, Misdirected
from skylift.platform.requests import (
    MIN_PASSWORD,
    audit_outside_home,
    caller,
    client_address,
    credentials,
    fallback_choice,
    json_object,
    metrics,
    platform,
    signup_home,
    string_field,
    user_store,
)
from skylift.platform.routes_regions import forward_login
from skylift.platform.runtime import Platform
from skylift.platform.tokens import issue_access
from skylift.platform.users import DirectoryEntry, Profile, Users


def _profile_json(profile: Profile) -> dict[str, str | None]:
    return {
        "id": profile.id,
        "email": profile.email,
        "home_region": profile.home_region,
        "display_name": profile.display_name,
        "fallback_region": profile.fallback_region,
    }


NO_STORE = {"Cache-Control": "no-store"}


def _token_pair_body(
    p: Platform, user_id: str, home_region: str, refresh_token: str, xr: str | None = None
) -> dict[str, str | int]:
    access = issue_access(
        p.keyring,
        sub=user_id,
        home_region=home_region,
        region=p.settings.region,
        ttl=p.settings.access_ttl,
        now=p.now(),
        xr=xr,
    )
    return {
        "access_token": access,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": p.settings.access_ttl,
    }


async def signup(request: Request) -> Response:
    """Create the user in its home region; ``fallback_region`` (optional) opts in at once."""
    p = platform(request)
    body = await json_object(request)
    email, password = credentials(body)
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"'password' must have at least {MIN_PASSWORD} characters")
    home, regional, entry = signup_home(request), p.regional, None
    if regional is not None:
        if home != regional.region:
            raise Misdirected(home, regional.region)  # the edge sends sign-ups home: a guard
        digest = directory.email_hash(regional.directory_key, email)
        async with p.db.write() as conn:
            known = await directory.lookup(conn, digest)
        if known is not None and known != home:  # registered in another region
            await p.audit("auth.signup_conflict", None, client=client_address(request))
            raise Conflict("this e-mail is already registered")
        entry = DirectoryEntry(digest, regional.peers)
    fallback = fallback_choice(request, home, body.get("fallback_region"))
    try:
        profile = await p.users.create(
            email, await p.passwords.hash(password), home, entry, fallback
        )
    except Conflict:
        await p.audit("auth.signup_conflict", None, client=client_address(request))
        raise
    if regional is not None:
        regional.pusher.wake()
    await p.audit("auth.signup", profile.id, client=client_address(request))
    metrics(request).auth_events.labels("signup").inc()
    return JSONResponse(_profile_json(profile), status_code=201)


async def login(request: Request) -> Response:
    """Log in here, or, for a user whose home is elsewhere, forward to the home region.

    The directory says where the e-mail's home is. An unknown e-mail costs the
    same password check and gets the same 401 as a wrong password. A login
    forwarded by a peer (signed) is answered here, never forwarded again.
    """
    p = platform(request)
    raw = await request.body()
    email, password = credentials(await json_object(request))
    client, forwarded = client_address(request), request.headers.get(peers.FORWARDED_LOGIN)
    regional = p.regional
    if regional is not None and forwarded is not None:
        original = request.headers.get(peers.FORWARDED_CLIENT, "")
        if peers.verify(
            regional.peer_key,
            request.headers.get(peers.SIGNATURE),
            method="POST",
            path="/auth/login",
            body=raw,
            now=int(time.time()),
            signed=(forwarded, original),
        ):
            client = original or client  # the rate limit counts the real client
    await p.limiter.hit(email, client, time.time())
    users: Users | None = p.users
    home = p.settings.region
    if regional is not None:
        async with p.db.write() as conn:
            known = await directory.lookup(
                conn, directory.email_hash(regional.directory_key, email)
            )
        if known is not None and known != regional.region:
            home = known
            try:
                users = await user_store(request, known, None, write=False, audit=False)
            except Misdirected:
                if forwarded is None:
                    return await forward_login(regional, known, raw, client, p.settings.retry_after)
                users = None  # misrouted twice: answer, never loop
    found = await users.credentials(email) if users is not None else None
    if not await p.passwords.verify(found.password_hash if found else None, password):
        await p.audit("auth.login_failed", found.id if found else None, client=client)
        metrics(request).auth_events.labels("login_failed").inc()
        raise AuthError("wrong e-mail or password")
    assert found is not None
    if users is p.users and p.passwords.needs_rehash(found.password_hash):
        await p.users.set_password_hash(found.id, await p.passwords.hash(password))
    if regional is not None and home != regional.region:
        promoted = bool(await regional.promoted())
        await audit_outside_home(request, home, found.id, "serve" if promoted else "read_only")
    refresh = await p.refresh.issue(found.id)
    await p.audit("auth.login", found.id, client=client)
    metrics(request).auth_events.labels("login").inc()
    body = _token_pair_body(p, found.id, found.home_region, refresh, found.fallback_region)
    return JSONResponse(body, headers=NO_STORE)


async def refresh(request: Request) -> Response:
    """Rotate; the answer is built first so that a replayed request can get it back."""
    p = platform(request)
    token = string_field(await json_object(request), "refresh_token", 256)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 8 <= len(idempotency_key) <= 128:
        raise BadRequest("Idempotency-Key must have 8 to 128 characters")
    user_id = await p.refresh.owner(token)
    profile = await p.users.profile(user_id) if user_id else None
    regional = p.regional
    if profile is None and user_id and regional is not None and regional.standby_of is not None:
        # a login served here from the standby during a failover: refresh from there too
        try:
            standby = await user_store(request, regional.standby_of, user_id, write=False)
        except Misdirected:
            standby = None  # the failover is over: log in again (at home)
        profile = await standby.profile(user_id) if standby is not None else None
    if profile is None:
        metrics(request).auth_events.labels("refresh_invalid").inc()
        raise AuthError("invalid refresh token")
    successor = p.refresh.new_token()
    answer = _token_pair_body(
        p, profile.id, profile.home_region, successor, profile.fallback_region
    )
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
    claims = await caller(request)
    write = request.method == "PATCH"
    users = await user_store(request, claims.home_region, claims.sub, write=write)
    if write:
        body = await json_object(request)
        name = body.get("display_name")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise BadRequest("'display_name' must be a string of at most 200 characters or null")
        profile = await users.update_display_name(claims.sub, name)
        if profile is not None:
            await p.audit("user.update", claims.sub, fields=["display_name"])
    else:
        profile = await users.profile(claims.sub)
    if profile is None:
        raise AuthError("invalid token")
    return JSONResponse(_profile_json(profile))


async def my_flags(request: Request) -> Response:
    p = platform(request)
    claims = await caller(request)
    await user_store(request, claims.home_region, claims.sub, write=False)
    return JSONResponse({"flags": await p.flags.for_user(claims.sub)})


async def jwks(request: Request) -> Response:
    """The region's public keys; ``region`` lets a peer check which region answered."""
    p = platform(request)
    return JSONResponse(
        {**p.keyring.jwks(), "region": p.settings.region},
        headers={"Cache-Control": "public, max-age=60"},
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
