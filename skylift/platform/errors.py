"""The platform's own errors, and the one place infrastructure failures become 503.

A dead Redis or PostgreSQL must give the client a clear ``503`` with
``Retry-After`` (and recover by itself when they return), never a ``500`` or
a hang: the handlers here are registered for exactly those library errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import psycopg
import psycopg_pool
import redis.exceptions
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = structlog.get_logger("skylift.platform")


class PlatformError(Exception):
    """Base: an error with an HTTP status and a message safe to show the client."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def response(self) -> Response:
        return JSONResponse({"error": self.message}, status_code=self.status)


class BadRequest(PlatformError):
    status = 400


class AuthError(PlatformError):
    """Bad credentials or token; the message never says which part was wrong."""

    status = 401

    def response(self) -> Response:
        return JSONResponse(
            {"error": self.message}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )


class Forbidden(PlatformError):
    status = 403


class Conflict(PlatformError):
    status = 409


class RateLimited(PlatformError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def response(self) -> Response:
        return JSONResponse(
            {"error": self.message, "retry_after": self.retry_after},
            status_code=429,
            headers={"Retry-After": str(self.retry_after)},
        )


class Misdirected(PlatformError):
    """421: this region may not serve that user (their home is elsewhere and not failed over)."""

    status = 421

    def __init__(self, home_region: str, region: str) -> None:
        super().__init__(f"this user's home region is {home_region}; {region} does not serve them")
        self.home_region, self.region = home_region, region

    def response(self) -> Response:
        return JSONResponse(
            {
                "error": "misdirected",
                "message": self.message,
                "home_region": self.home_region,
                "region": self.region,
            },
            status_code=421,
        )


class NoCopyHere(PlatformError):
    """The documented 503 of the edge: the home is failed over to a region with no copy.

    Same body as the edge's own 503 (``region_unavailable``), so a client sees one
    answer for "your region is down and nothing in your jurisdiction can serve
    you", whether the edge or the platform noticed it.
    """

    status = 503

    def __init__(self, home_region: str, zone: str, region: str, retry_after: int) -> None:
        super().__init__(
            f"home region {home_region} is down and {region} holds no copy of its users' data"
        )
        self.home_region, self.zone, self.retry_after = home_region, zone, retry_after

    def response(self) -> Response:
        return JSONResponse(
            {
                "error": "region_unavailable",
                "home_region": self.home_region,
                "zone": self.zone,
                "reason": self.message,
            },
            status_code=503,
            headers={"Retry-After": str(self.retry_after)},
        )


class ReadOnly(PlatformError):
    """503 + Retry-After: a failed-over user's data is served from a standby not yet promoted."""

    status = 503
    served_from: str | None = None  # said in the body when not the standby

    def __init__(self, home_region: str, region: str, retry_after: int) -> None:
        super().__init__(self.explain(home_region, region))
        self.home_region, self.region, self.retry_after = home_region, region, retry_after

    @staticmethod
    def explain(home_region: str, region: str) -> str:
        return (
            f"home region {home_region} is failed over; {region} serves its users from a "
            "read-only standby until the standby is promoted (skylift region promote): "
            "reads work, writes wait"
        )

    def response(self) -> Response:
        served_from = {"served_from": self.served_from} if self.served_from else {}
        return JSONResponse(
            {
                "error": "read_only",
                "reason": self.message,
                "home_region": self.home_region,
                "region": self.region,
                **served_from,
                "retry_after": self.retry_after,
            },
            status_code=503,
            headers={"Retry-After": str(self.retry_after)},
        )


class Unavailable(PlatformError):
    """503 + Retry-After for a reason of the platform's own (named in the body)."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def response(self) -> Response:
        return JSONResponse(
            {"error": "unavailable", "reason": self.message, "retry_after": self.retry_after},
            status_code=503,
            headers={"Retry-After": str(self.retry_after)},
        )


#: Library errors that mean "a dependency is down or overloaded", not "a bug".
REDIS_DOWN: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError while Redis loads its AOF
    redis.exceptions.TimeoutError,
)
POSTGRES_DOWN: tuple[type[Exception], ...] = (
    psycopg.OperationalError,  # connection refused/lost, admin shutdown, statement timeout
    psycopg_pool.PoolTimeout,
    psycopg.InterfaceError,  # the connection was closed under us
)


def unavailable_handler(
    retry_after: int,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Map a dependency failure to 503 + ``Retry-After``, logged without secrets."""

    async def handle(request: Request, exc: Exception) -> Response:
        dependency = "redis" if isinstance(exc, REDIS_DOWN) else "postgresql"
        log.warning(
            "dependency_unavailable",
            dependency=dependency,
            path=request.url.path,
            error=type(exc).__name__,
        )
        return JSONResponse(
            {
                "error": f"{dependency} is unavailable, try again shortly",
                "retry_after": retry_after,
            },
            status_code=503,
            headers={"Retry-After": str(retry_after)},
        )

    return handle


async def platform_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, PlatformError)
    return exc.response()
