"""``edge.cache``: the paths every region's edge may answer from its own HAProxy cache.

Off unless configured, and the same in every region (it lives on the shared
``edge`` settings). HAProxy 2.6 keys its cache on Host and URI only, never on
the region that produced the response, so only paths whose answer is the same
for everyone, everywhere, may be listed (docs/edge-cache.md).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from skylift.config.base import Model

#: What a declared path may contain: it becomes an HAProxy ACL pattern, so no
#: whitespace, quotes, braces, '#' or backslashes (they would end or escape the line).
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~%/+,;=:@-]*$")
#: Paths the edge itself answers or that carry per-user answers by construction.
RESERVED_PREFIXES = ("/_skylift/",)
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class EdgeCacheSettings(Model):
    """Per-path caching at the edge (HAProxy ``cache``), for declared-public paths only."""

    paths: list[str] = Field(
        min_length=1,
        description="public paths: '/favicon.ico' matches exactly, '/static/' (ending in '/') "
        "every path under it; their answers must be the same for every user in every region",
    )
    max_age: int = Field(
        60,
        ge=1,
        le=86400,
        description="seconds an object is kept at most (a response's s-maxage/max-age lowers it)",
    )
    total_max_size: int = Field(
        16, ge=1, le=4095, description="megabytes of RAM for the cache of each edge"
    )
    max_object_size: int | None = Field(
        None,
        ge=1,
        description="bytes; larger responses are not cached (default: total_max_size / 256; "
        "at most half of total_max_size)",
    )
    bypass_cookies: list[str] = Field(
        default_factory=list,
        description="cookies that identify a user (a session cookie): a request carrying one "
        "is never answered from or stored in the cache (Authorization never is either)",
    )

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not _PATH_RE.match(path):
                raise ValueError(
                    f"cache path {path!r}: write an absolute path such as '/static/' or "
                    "'/favicon.ico' (letters, digits and . _ ~ % / + , ; = : @ -; no spaces, "
                    "quotes, '#' or braces)"
                )
            if path == "/":
                raise ValueError(
                    "cache path '/' would declare every path public, the API included: list "
                    "the public prefixes (e.g. '/static/') instead"
                )
            if path.startswith(RESERVED_PREFIXES) or path.rstrip("/") == "/_skylift":
                raise ValueError(
                    f"cache path {path!r}: paths under /_skylift/ are the edge's own "
                    "(region health) and are never cached; remove it"
                )
        if len(set(value)) != len(value):
            raise ValueError("cache paths: each path once")
        return value

    @field_validator("bypass_cookies")
    @classmethod
    def _cookies(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _COOKIE_RE.match(name):
                raise ValueError(
                    f"bypass cookie {name!r}: write a cookie name of letters, digits, '_', '.' "
                    "and '-'"
                )
        return value

    @model_validator(mode="after")
    def _object_fits(self) -> EdgeCacheSettings:
        if (
            self.max_object_size is not None
            and self.max_object_size > self.total_max_size * (1 << 20) // 2
        ):
            raise ValueError(
                f"max_object_size {self.max_object_size} is more than half of total_max_size "
                f"({self.total_max_size} MB, which HAProxy refuses): lower it or raise "
                "total_max_size"
            )
        return self
