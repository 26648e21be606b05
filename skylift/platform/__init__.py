"""The reference platform skylift scales: regional auth, audit log and feature flags.

A Starlette app whose replicas keep no state of their own: sessions (refresh
token families), rate-limit counters and hot data live in Redis; users, the
hash-chained audit log and feature flags in the region's PostgreSQL, reached
through a bounded connection pool (reads optionally from a streaming replica).
Run it with ``python -m skylift.platform serve --port PORT``; settings come
from ``SKYLIFT_PLATFORM_*`` environment variables (:mod:`.settings`).

Errors callers see::

    PlatformError
    ├── AuthError          401: bad credentials or token (never says which part)
    ├── Forbidden          403: the admin API is disabled (no admin token file)
    ├── Conflict           409: e-mail already registered
    ├── RateLimited        429: too many login attempts (carries retry_after)
    └── BadRequest         400: malformed input

Redis or PostgreSQL failures are not wrapped: the app maps their exceptions
to 503 with ``Retry-After`` in one place (:mod:`.errors`).
"""

from skylift.platform.settings import PlatformSettings

__all__ = ["PlatformSettings"]
