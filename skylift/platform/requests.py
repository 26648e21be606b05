"""Request parsing shared by the route modules: JSON bodies, the caller, the client address.

Also the region guard: the ``X-Skylift-*`` headers the edge sets are read only
from a trusted proxy, and every access to a user's row goes through
:func:`user_store`, which asks the shared residency rules whether this region
may serve that user, and from which database.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.requests import Request

from skylift.platform import peers
from skylift.platform.copies import CopyReadOnly
from skylift.platform.errors import (
    AuthError,
    BadRequest,
    Misdirected,
    NoCopyHere,
    ReadOnly,
    Unavailable,
)
from skylift.platform.metrics import PlatformMetrics
from skylift.platform.runtime import Platform
from skylift.platform.tokens import AccessClaims, bearer, unverified_kid, verify_access
from skylift.platform.users import Users
from skylift.regions.rules import RequestFacts, choose_home, serving_verdict

ROUTE = "x-skylift-route"
COUNTRY = "x-skylift-country"
SELECTOR = "x-skylift-region"
SELECTOR_COOKIE = "skylift_region"

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


async def signed_peer_object(request: Request, path: str) -> dict[str, Any] | None:
    """A peer region's signed POST body as a JSON object, addressed to this region.

    None on a single-region platform (the caller answers 404); 401 for a bad
    signature; 421 when ``to`` names another region (a failover routed it here).
    """
    regional = platform(request).regional
    if regional is None:
        return None
    raw = await request.body()
    if not peers.verify(
        regional.peer_key,
        request.headers.get(peers.SIGNATURE),
        method="POST",
        path=path,
        body=raw,
        now=int(time.time()),
    ):
        raise AuthError("invalid peer signature")
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("send a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    if body.get("to") != regional.region:
        raise Misdirected(str(body.get("to")), regional.region)
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


def from_trusted_proxy(request: Request) -> bool:
    peer = request.client.host if request.client else None
    return peer is not None and peer in platform(request).settings.trusted_proxies


def trusted_header(request: Request, name: str) -> str | None:
    """A header the edge sets, or None when the peer is not a trusted proxy."""
    value = request.headers.get(name) if from_trusted_proxy(request) else None
    return value.strip() or None if value else None


async def caller(request: Request) -> AccessClaims:
    """The verified access token's claims; another region's keys are fetched when needed."""
    p = platform(request)
    token = bearer(request.headers.get("authorization"))
    regional = p.regional
    if regional is None:
        return verify_access(token, p.keyring, p.settings.region)
    kid = unverified_kid(token)
    if kid is not None and p.keyring.public_key(kid) is None:
        await regional.peer_keys.resolve(kid)
    return verify_access(token, p.keyring, p.settings.region, peers=regional.peer_keys.lookup)


def signup_home(request: Request) -> str:
    """Where a new user lives: selector, else country, else the default; never latency."""
    p = platform(request)
    if p.regional is None:
        return p.settings.region
    trusted = from_trusted_proxy(request)
    selector = trusted_header(request, SELECTOR) or (
        request.cookies.get(SELECTOR_COOKIE) if trusted else None
    )
    facts = RequestFacts(selector=selector, country=trusted_header(request, COUNTRY))
    home, _ = choose_home(p.regional.topology, facts)
    return home


def fallback_choice(request: Request, home: str, value: object) -> str | None:
    """A valid opt-in fallback region for a user of ``home`` (None: not opted in)."""
    if value is None:
        return None
    regional = platform(request).regional
    if regional is None or not isinstance(value, str) or value not in regional.topology:
        raise BadRequest("'region' must be one of the deployment's regions, or null")
    topology = regional.topology
    if home in topology and topology.zone_of(value) == topology.zone_of(home):
        raise BadRequest(
            f"{value} is in the home region's zone: it already serves the user when home is down"
        )
    return value


async def user_store(
    request: Request, home: str, user_id: str | None, *, write: bool, audit: bool = True
) -> Users:
    """The users of ``home`` as this region may reach them, or the refusal.

    Home here: the region's own database. Holding ``home``'s in-zone standby while
    the edge says the request is failed over: the standby (reads only, until
    promoted: then writes too), and a ``served_outside_home`` audit record in this
    region's log. Failed over to a region with no copy: the edge's documented 503.
    Anything else: 421 naming the home region.
    """
    p = platform(request)
    regional = p.regional
    if regional is None:
        return p.users
    route = trusted_header(request, ROUTE)
    promoted = await regional.promoted() if home == regional.standby_of else {}
    verdict = serving_verdict(
        regional.topology,
        region=regional.region,
        home=home,
        home_failed_over=route == "failover",
        promoted=promoted,
    )
    if verdict == "misdirected" and route == "failover" and home in regional.topology:
        copy = await opt_in_copy(request, home, user_id, write=write, audit=audit)
        if copy is not None:
            return copy
        # the edge failed the user over here, but nothing here may serve them
        zone = regional.topology.zone_of(home)
        raise NoCopyHere(home, zone, regional.region, p.settings.retry_after)
    if verdict == "misdirected":
        raise Misdirected(home, regional.region)
    if home == regional.region:
        return p.users
    if regional.standby_users is None:
        raise Unavailable(
            f"{regional.region} holds no copy of {home}'s data (no standby database configured)",
            p.settings.retry_after,
        )
    if verdict == "read_only" and write:
        raise ReadOnly(home, regional.region, p.settings.retry_after)
    if audit:
        await audit_outside_home(request, home, user_id, verdict)
    return regional.standby_users


async def opt_in_copy(
    request: Request, home: str, user_id: str | None, *, write: bool, audit: bool
) -> Users | None:
    """The user's opt-in copy held here, when the rules allow it (None: there is none).

    A copy is a subscriber of the home's primary: reads only; a write is the
    503 + Retry-After of :class:`CopyReadOnly` until the home region is back.
    """
    p = platform(request)
    regional = p.regional
    if regional is None or regional.copies is None or user_id is None:
        return None
    users = await regional.copies.users_for(home, user_id)
    if users is None:
        return None
    verdict = serving_verdict(
        regional.topology,
        region=regional.region,
        home=home,
        home_failed_over=True,
        opt_in_copy=True,
    )
    if verdict == "misdirected":
        return None
    if write:
        raise CopyReadOnly(home, regional.region, p.settings.retry_after)
    if audit:
        await audit_outside_home(request, home, user_id, "opt_in_copy")
    return users


async def audit_outside_home(
    request: Request, home: str, user_id: str | None, verdict: str
) -> None:
    """Metadata only (no body, no profile): who, whose home, what, and how it was served."""
    p = platform(request)
    route = trusted_header(request, ROUTE)
    await p.audit(
        "served_outside_home",
        user_id,
        tag="served_outside_home",
        home_region=home,
        method=request.method,
        path=request.url.path,
        access=verdict if verdict in ("read_only", "opt_in_copy") else "promoted_standby",
        route=route,
    )
