"""The edge cache: HAProxy 2.6's ``cache`` for declared-public paths, pure rendering.

What HAProxy 2.6 already refuses to store or serve (checked on 2.6.12): a
non-200 answer, a non-GET or HTTP/1.0 request, a request with Authorization or
``Cache-Control: no-cache``, a response with ``Cache-Control: private``,
``no-store``, ``no-cache``, ``max-age=0`` or ``s-maxage=0``, a response with
Vary (``process-vary off``), a response with neither an expiry nor a validator.
What it does NOT refuse, and the rules below add: a response with Set-Cookie
(2.6 stores it when Cache-Control says ``public``/``max-age``, and then hands
one user's cookie to everyone), a request with a session cookie, and anything
that mixes regions (the key is Host + URI, never the region: docs/edge-cache.md).

An object is stored only when this edge's own region produced it for a request
whose home is this region (no failover answer, no trusted hop), and served only
to requests whose home is this region: each edge's cache holds its own
region's answers and gives them to its own region's users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The cache section's name (and the label of nothing else).
CACHE_NAME = "skylift_edge"
#: Response header saying what the cache did: hit, miss (looked up, forwarded) or bypass.
CACHE_HEADER = "X-Skylift-Cache"


@dataclass(frozen=True, slots=True)
class EdgeCache:
    """The edge cache of every region (the shared ``edge.cache`` config)."""

    paths: tuple[str, ...]  # exact paths, or prefixes ending in '/'
    max_age: int = 60  # seconds, upper bound over the response's own max-age
    total_max_size: int = 16  # megabytes
    max_object_size: int | None = None  # bytes (HAProxy's default: total / 256)
    bypass_cookies: tuple[str, ...] = ()  # a request carrying one is never cached

    @property
    def exact(self) -> tuple[str, ...]:
        return tuple(p for p in self.paths if not p.endswith("/"))

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(p for p in self.paths if p.endswith("/"))


def cache_section(cache: EdgeCache) -> list[str]:
    """The ``cache`` section: HAProxy allocates it at (re)load, so a reload empties it."""
    lines = [
        "",
        f"cache {CACHE_NAME}",
        f"    total-max-size {cache.total_max_size}",
        f"    max-age {cache.max_age}",
        # Vary is never processed: a response that varies is not stored at all.
        "    process-vary off",
    ]
    if cache.max_object_size is not None:
        lines.append(f"    max-object-size {cache.max_object_size}")
    return lines


def cache_request_lines(cache: EdgeCache, region: str) -> list[str]:
    """Frontend request rules, after routing (``txn.home`` known, ``pt`` defined).

    ``txn.cache`` marks a request the cache may answer and whose answer it may
    keep; ``cache-use`` (which also computes the key the store needs) runs only then.
    """
    lines: list[str] = []
    if cache.exact:
        lines.append(f"    acl cache_path path -m str {' '.join(cache.exact)}")
    if cache.prefixes:
        lines.append(f"    acl cache_path path_beg {' '.join(cache.prefixes)}")
    # A dot segment or an encoded '.', '/' or '\\' could make a declared prefix name an
    # undeclared resource once the origin normalises the path: never cached.
    lines.append("    acl cache_odd path_reg (^|/)[.][.]?(/|$)|%2[eEfF]|%5[cC]")
    lines.append("    acl cache_user req.hdr(Authorization) -m found")
    lines += [f"    acl cache_user req.cook({name}) -m found" for name in cache.bypass_cookies]
    lines += [
        "    http-request set-var(txn.cache) bool(true) if !pt METH_GET cache_path !cache_odd "
        "!cache_user "
        f"{{ var(txn.home) -m str {region} }}",
        f"    http-request cache-use {CACHE_NAME} if {{ var(txn.cache) -m bool }}",
    ]
    return lines


def cache_response_lines(region: str) -> list[str]:
    """Frontend response rules: store only this region's own, non-failover, cookie-free answer.

    Frontend ``http-response`` rules run after the backend's, so ``txn.route``
    is already ``failover`` when another region answered.
    """
    return [
        f"    http-response cache-store {CACHE_NAME} if {{ var(txn.cache) -m bool }} "
        f"{{ srv_name -m str {region} }} !{{ var(txn.route) -m str failover }} "
        "!{ res.hdr(Set-Cookie) -m found }",
        f"    http-after-response set-header {CACHE_HEADER} bypass",
        f"    http-after-response set-header {CACHE_HEADER} miss if {{ var(txn.cache) -m bool }}",
        f"    http-after-response set-header {CACHE_HEADER} hit if {{ res.cache_hit }}",
    ]


_PATH_RE = re.compile(r"^/[A-Za-z0-9._~%/+,;=:@-]*$")
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def validate_cache(cache: EdgeCache) -> None:
    """Raise ValueError for anything that would break or inject a config line."""
    if not cache.paths:
        raise ValueError("edge cache: give at least one public path")
    for path in cache.paths:
        if not _PATH_RE.match(path) or path == "/" or path.startswith("/_skylift"):
            raise ValueError(f"edge cache: invalid public path {path!r}")
    for name in cache.bypass_cookies:
        if not _COOKIE_RE.match(name):
            raise ValueError(f"edge cache: invalid cookie name {name!r}")
    if not 1 <= cache.total_max_size <= 4095 or cache.max_age < 1:
        raise ValueError("edge cache: total_max_size must be 1..4095 MB and max_age >= 1 s")
    if cache.max_object_size is not None and not (
        0 < cache.max_object_size <= cache.total_max_size * (1 << 20) // 2
    ):
        raise ValueError("edge cache: max_object_size must be at most half of total_max_size")
