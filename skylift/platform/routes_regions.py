"""Endpoints of a multi-region platform: the failover opt-in, directory pushes, forwarded logins."""

from __future__ import annotations

import time

import httpx
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skylift.platform import directory, peers
from skylift.platform.errors import AuthError, BadRequest, Unavailable
from skylift.platform.regional import Regional
from skylift.platform.requests import (
    caller,
    fallback_choice,
    json_object,
    platform,
    signed_peer_object,
    user_store,
)
from skylift.regions.rules import failover_chain

log = structlog.get_logger("skylift.platform")

#: answer headers passed back from the home region's answer to a forwarded login
_PASSED = ("content-type", "retry-after", "cache-control", "www-authenticate")


async def forward_login(
    regional: Regional, home: str, raw: bytes, client: str, retry_after: int
) -> Response:
    """Send a login to the user's home region through its edge and return its answer.

    The selector header makes the edge route it home (or, the home being down, to
    the home's failover region); the signed ``Skylift-Forwarded-Login`` mark makes
    the region that answers do so itself (no second hop) and count the original
    client in its rate limit. When the home's edge cannot be reached at all (its
    host is cut off), the edges of the other regions of the home's chain (same
    zone only: :func:`failover_chain` without an opt-in) are asked in turn, with
    the same selector: their own health view routes it.
    """
    headers = {
        "content-type": "application/json",
        peers.SELECTOR: home,
        peers.FORWARDED_LOGIN: regional.region,
        peers.FORWARDED_CLIENT: client,
        peers.SIGNATURE: peers.sign(
            regional.peer_key,
            method="POST",
            path="/auth/login",
            body=raw,
            now=int(time.time()),
            signed=(regional.region, client),
        ),
    }
    for via in failover_chain(regional.topology, home):
        edge = regional.regions.edges[via]
        try:
            answer = await regional.client.post(
                f"http://{edge}/auth/login", content=raw, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            log.warning("login_forward_unreachable", home=home, via=via, error=type(exc).__name__)
            continue  # never reached it: the next edge of the chain
        except httpx.HTTPError as exc:
            log.warning("login_forward_failed", home=home, via=via, error=type(exc).__name__)
            break  # sent, answer lost: do not send the password around again
        log.info("login_forwarded", home=home, via=via, status=answer.status_code)
        passed = {k: v for k, v in answer.headers.items() if k.lower() in _PASSED}
        return Response(answer.content, status_code=answer.status_code, headers=passed)
    # says nothing of the e-mail or its region: no enumeration through outages
    raise Unavailable("login is unavailable, try again shortly", retry_after)


async def put_failover(request: Request) -> Response:
    """``PUT /me/failover {"region": NAME | null}``: opt in to (out of) a cross-zone fallback.

    Stored on the user row; the tokens carry it as ``xr`` from the next refresh on
    (so opting out takes effect within one access-token lifetime).
    """
    p = platform(request)
    claims = await caller(request)
    body = await json_object(request)
    if "region" not in body:
        raise BadRequest('send {"region": REGION} to opt in, {"region": null} to opt out')
    region = fallback_choice(request, claims.home_region, body["region"])
    users = await user_store(request, claims.home_region, claims.sub, write=True)
    profile = await users.set_fallback(claims.sub, region)
    if profile is None:
        raise AuthError("invalid token")
    await p.audit("user.failover_opt_in", claims.sub, fallback_region=region)
    return JSONResponse(
        {
            "home_region": profile.home_region,
            "fallback_region": profile.fallback_region,
            "effective": "at the next token refresh",
        }
    )


async def receive_directory(request: Request) -> Response:
    """``POST /internal/directory``: entries pushed by a peer (signed); an idempotent upsert.

    A push routed elsewhere (a failover) is refused with 421: the sender retries.
    """
    p = platform(request)
    body = await signed_peer_object(request, directory.PUSH_PATH)
    if body is None or p.regional is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    regional = p.regional
    if not isinstance(body.get("entries"), list):
        raise BadRequest('send {"to", "entries": [{"email_hash", "home_region"}]}')
    entries: list[tuple[str, str]] = []
    for item in body["entries"]:
        if not isinstance(item, dict):
            raise BadRequest("each entry is an object")
        digest, home = item.get("email_hash"), item.get("home_region")
        if not directory.valid_hash(digest) or not isinstance(home, str):
            raise BadRequest("each entry needs a 64-hex 'email_hash' and a 'home_region'")
        if home not in regional.topology:
            raise BadRequest(f"unknown region {home!r}")
        assert isinstance(digest, str)
        entries.append((digest, home))
    async with p.db.write() as conn:
        stored = await directory.upsert(conn, entries)
    return JSONResponse({"stored": stored})


ROUTES = [
    Route("/me/failover", put_failover, methods=["PUT"]),
    Route(directory.PUSH_PATH, receive_directory, methods=["POST"]),
]
