"""Controller-wide settings: HAProxy, the local API, metrics collection, the store."""

from __future__ import annotations

from pydantic import (
    Field,
    field_validator,
)

from skylift.config.base import Listen, Model, _parse_listen, split_listen
from skylift.units import Duration


class HAProxySettings(Model):
    """The local HAProxy that balances every service."""

    binary: str = Field("haproxy", description="name on PATH or absolute path")
    metrics: Listen = Field("127.0.0.1:8405", description="built-in Prometheus exporter (loopback)")
    timeout_connect: Duration = 2.0
    timeout_client: Duration = 30.0
    timeout_server: Duration = 30.0
    maxconn: int = Field(4096, ge=1)

    _listen = field_validator("metrics", mode="before")(lambda cls, v: _parse_listen(v))


class ApiSettings(Model):
    """skylift's own HTTP API (bearer token in the state directory)."""

    listen: Listen = "127.0.0.1:8470"

    _listen = field_validator("listen", mode="before")(lambda cls, v: _parse_listen(v))

    @field_validator("listen")
    @classmethod
    def _loopback(cls, value: str) -> str:
        host, _ = split_listen(value)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"API on {host!r} would be reachable from outside: bind it to 127.0.0.1 "
                "and put a TLS proxy in front if you need remote access"
            )
        return value


class MetricsSettings(Model):
    """How the autoscaler observes services."""

    prometheus_url: str | None = Field(
        None, description="Prometheus base URL for services' `prometheus:` queries"
    )

    window: Duration = Field(30.0, description="averaging window the engine sees")
    stale_after: int = Field(
        3, ge=1, description="intervals without a fresh sample before a source counts as failing"
    )


class StoreSettings(Model):
    """Where state and events live. SQLite in the state directory unless a URL is given."""

    url: str | None = Field(
        None, description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db"
    )
    lease: Duration = Field(
        10.0,
        ge=1.0,
        description="controller lease: renewed every tick; a standby takes over after it "
        "expires (a third of it when the holder's process is gone)",
    )


class RetentionSettings(Model):
    """How much the store keeps: a long-running controller must not grow without bound."""

    events: int = Field(
        10_000, ge=100, description="events kept (the newest; older ones are deleted)"
    )
    decisions: Duration = Field(
        7 * 86400.0, description="scaling decisions are kept this long, e.g. 7d"
    )
    history: Duration = Field(
        400 * 86400.0,
        le=400 * 86400.0,
        description="load history (what forecasting learns from) is kept this long; at most "
        "400d, the horizon of its hourly roll-up",
    )
    interval: Duration = Field(
        60.0,
        gt=0,
        description="how often the controller prunes (between passes the store "
        "can exceed `events` by what one interval writes)",
    )
