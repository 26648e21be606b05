"""Controller-wide settings: HAProxy, the local API, metrics collection, the store."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skylift.config.base import Listen, Model, _parse_listen, split_listen
from skylift.config.edge_cache import EdgeCacheSettings
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

    # the TLS fields come first: the listen check reads them
    tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain): required to listen beyond loopback"
    )
    tls_key_file: str | None = Field(None, description="PEM private key of tls_cert_file")
    ca_file: str | None = Field(
        None, description="CA that signed peer regions' API certificates (CLI and peers verify)"
    )
    listen: Listen = "127.0.0.1:8470"

    _listen = field_validator("listen", mode="before")(lambda cls, v: _parse_listen(v))

    @field_validator("listen")
    @classmethod
    def _loopback_unless_tls(cls, value: str, info: ValidationInfo) -> str:
        host, _ = split_listen(value)
        if host not in ("127.0.0.1", "localhost", "::1") and not info.data.get("tls_cert_file"):
            raise ValueError(
                f"API on {host!r} would be reachable from outside without TLS: bind it to "
                "127.0.0.1, or give tls_cert_file and tls_key_file (the bearer token is "
                "required either way)"
            )
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self


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


class RegionCheckSettings(Model):
    """How every edge health-checks every region: a dead one is out after ~fall x inter."""

    path: str = Field("/healthz", description="checked on each region's service frontend")
    inter: Duration = Field(0.5, gt=0, description="time between two checks")
    fall: int = Field(2, ge=1, description="failed checks before a region is out of rotation")
    rise: int = Field(2, ge=1, description="passed checks before it is back")
    timeout: Duration = Field(0.5, gt=0, description="longest wait for one check")


class EdgeSettings(Model):
    """Shared by every region's edge: which service it fronts and how it routes."""

    service: str | None = Field(
        None, description="the service the edges front (default: the only service)"
    )
    mode: Literal["geo", "latency"] = Field(
        "geo",
        description="anonymous users without selector or known country: 'geo' sends them to "
        "default_region, 'latency' to the region this edge measures as nearest",
    )
    default_region: str | None = Field(None, description="default: the first region")
    check: RegionCheckSettings = RegionCheckSettings()
    geoip_map: str | None = Field(
        None, description="CIDR -> country map (build it with `skylift geoip update`)"
    )
    extra_countries: dict[str, str] = Field(
        default_factory=dict, description="extra CIDR -> country entries (private networks)"
    )
    retry_after: int = Field(2, ge=1, description="seconds advertised with the documented 503")
    cache: EdgeCacheSettings | None = Field(
        None, description="per-path edge cache for declared-public paths (off by default)"
    )


class FailoverSettings(Model):
    """What surviving regions do when a region of their zone goes down."""

    prewarm: float = Field(
        1.0,
        ge=0,
        le=4,
        description="add this fraction of the failed region's replicas to the region that "
        "takes over its users (its autoscaler takes it from there); 0 disables",
    )
