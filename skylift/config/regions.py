"""Config of phase-2 regions: each region's database and its Telegram backups.

Residency is structural: every region names its own database, bot token,
chat and key file, so nothing in the config can send one region's backup to
another region's chat. Secrets are never written in the YAML: the bot token
comes from an environment variable or a file, the key from a file, and a
database password (if any) from libpq's usual places (``~/.pgpass``,
``PGPASSFILE``, ``PGPASSWORD``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skylift.config.base import _parse_listen
from skylift.config.settings import ApiSettings, StoreSettings
from skylift.units import Duration

MIB = 1024 * 1024
MAX_PART_SIZE = 19 * MIB  # the cloud Bot API lets bots download files up to 20 MB only
DEFAULT_API_URL = "https://api.telegram.org"
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(Ki|Mi|k|M)?B?\s*$")
_SIZE_UNITS = {"": 1, "k": 1000, "M": 1000**2, "Ki": 1024, "Mi": 1024**2}
SIZE_HINT = "write a size like '19Mi' (1024-based), '512Ki', '10M' or bytes"


def parse_size(value: Any) -> int:
    """Bytes from ``19Mi``/``512Ki``/``10M``/``1000`` (this module stays import-light)."""
    match = _SIZE_RE.match(str(value)) if isinstance(value, int | str) else None
    if isinstance(value, bool) or match is None:
        raise ValueError(f"invalid size {value!r}: {SIZE_HINT}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TelegramTarget(_Model):
    """Where a region's backups go: one bot, one chat, one Bot API server."""

    chat_id: int | str = Field(description="the region's own chat: numeric id or '@channel'")
    bot_token_env: str | None = Field(None, description="environment variable holding the token")
    bot_token_file: str | None = Field(
        None, description="file holding the token (relative to the config)"
    )
    api_url: str = Field(DEFAULT_API_URL, description="Bot API base URL (self-hosted server)")
    part_size: int = Field(
        MAX_PART_SIZE,
        description="largest part uploaded, e.g. '19Mi' (at most 19Mi: bots can only "
        "download files up to 20 MB, a larger part could never be restored)",
        json_schema_extra={"type": ["integer", "string"]},
    )
    min_interval: Duration = Field(
        1.0, description="least time between two messages to the chat (Bot API: ~1/s per chat)"
    )
    timeout: Duration = Field(120.0, description="longest wait for one HTTP request")
    max_retries: int = Field(
        8, ge=0, le=100, description="retries of a failed request (5xx, network)"
    )

    @field_validator("part_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        size = parse_size(value)
        if size > MAX_PART_SIZE:
            raise ValueError(
                f"part_size {value!r} is above 19Mi: the Bot API lets bots download at most "
                "20 MB, so a larger part could be uploaded but never restored"
            )
        if size < 64 * 1024:
            raise ValueError(f"part_size {value!r} is below 64Ki: use a size like '19Mi'")
        return size

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"invalid api_url {value!r}: write 'https://api.telegram.org'")
        if "/bot" in parts.path or parts.username or parts.password:
            raise ValueError(
                "api_url must not contain the bot token: give only the server's base URL and "
                "put the token in bot_token_env or bot_token_file"
            )
        return value.rstrip("/")

    @field_validator("bot_token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_RE.match(value):
            raise ValueError(
                f"bot_token_env {value!r} is not a variable name: give the NAME of the "
                "environment variable holding the token (never the token itself)"
            )
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> TelegramTarget:
        if (self.bot_token_env is None) == (self.bot_token_file is None):
            raise ValueError(
                "give exactly one of bot_token_env (an environment variable name) or "
                "bot_token_file (a file holding the token)"
            )
        return self


class Retention(_Model):
    """Which complete backups stay live (restic-style: a backup kept by any rule stays)."""

    keep_last: int = Field(7, ge=1, description="the newest N backups")
    keep_daily: int = Field(7, ge=0, description="the newest backup of each of the last N days")
    keep_weekly: int = Field(4, ge=0, description="the newest of each of the last N ISO weeks")
    keep_monthly: int = Field(6, ge=0, description="the newest of each of the last N months")


class RegionBackup(_Model):
    """How one region is backed up."""

    telegram: TelegramTarget
    key_file: str = Field(description="the region's key (create it with `skylift backup keygen`)")
    schedule: str | None = Field(None, description="5-field cron in UTC, e.g. '0 3 * * *'")
    retention: Retention = Retention()
    compression_level: int = Field(3, ge=1, le=19, description="zstd level")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        # a backup worker gets a config the CLI validated (context "validated"): it skips
        # this check, as importing the engine's cron parser would pull in the whole engine
        if value is not None and not (info.context or {}).get("validated"):
            from skylift.engine.schedule import Cron

            Cron.parse(value)
        return value


_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


class RegionEdge(_Model):
    """The region's edge HAProxy: where clients (and peer edges) reach it."""

    listen: str = Field(description="HOST:PORT clients and peer edges connect to")
    reach: dict[str, str] = Field(
        default_factory=dict,
        description="how THIS edge reaches a peer region's edge, region -> HOST:PORT (a proxy, "
        "another address); default: the peer's own edge.listen",
    )
    metrics: str | None = Field(None, description="loopback HOST:PORT of the edge's exporter")

    @field_validator("listen", "metrics", mode="before")
    @classmethod
    def _address(cls, value: Any) -> Any:
        return None if value is None else _parse_listen(value)

    @field_validator("reach", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _parse_listen(v) for k, v in value.items()}
        return value


class RegionStandby(_Model):
    """An in-zone PostgreSQL streaming standby of this region's database."""

    region: str = Field(description="the region (same zone) whose host runs the standby")
    database_url: str = Field(description="postgresql:// URL of the standby (no password)")

    _pg = field_validator("database_url")(lambda cls, v: _check_pg_url(v))


def _check_pg_url(value: str) -> str:
    parts = urlsplit(value)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError("database_url must be a postgresql://user@host:port/db URL")
    if parts.password:
        raise ValueError(
            "database_url contains a password: secrets never go in the YAML; remove it and "
            "use ~/.pgpass, PGPASSFILE or PGPASSWORD"
        )
    if not parts.path.strip("/"):
        raise ValueError("database_url names no database: add '/dbname' at the end")
    return value


class Region(_Model):
    """One region: its data (PostgreSQL, Redis), its edge, its services, its control plane.

    A region with only ``database_url`` (and ``backup``) is a backup-only region,
    as before. With ``edge`` it is a full phase-2 region: every region then
    needs a ``zone`` and an ``edge`` (checked at the root).
    """

    database_url: str = Field(description="postgresql://user@host:port/db (no password here)")
    backup: RegionBackup | None = None
    zone: str | None = Field(
        None, description="residency zone / jurisdiction, e.g. 'eu' for eu-west and eu-central"
    )
    countries: list[str] = Field(
        default_factory=list, description="ISO 3166 country codes this region serves by default"
    )
    nearest: list[str] = Field(
        default_factory=list,
        description="other regions, nearest first: the failover order inside a zone",
    )
    edge: RegionEdge | None = None
    redis_url: str | None = Field(None, description="redis://host:port/db of the region's Redis")
    standby: RegionStandby | None = None
    api: ApiSettings | None = Field(
        None, description="this region's controller API (default: loopback, offset port)"
    )
    store: StoreSettings | None = Field(
        None, description="this region's own store and lock (default: SQLite in its state dir)"
    )
    state_dir: str | None = Field(None, description="default: <state_dir>/<region>")
    port_offset: int = Field(
        0,
        ge=0,
        le=30000,
        description="added to every port of the shared service definitions (frontends, "
        "replica port ranges, API, HAProxy exporter): several regions on one host",
    )
    services: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-region overrides merged over the root `services:` definitions",
    )

    _pg = field_validator("database_url")(lambda cls, v: _check_pg_url(v))

    @field_validator("countries", mode="before")
    @classmethod
    def _countries(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        codes = [str(c).strip().upper() for c in value]
        bad = [c for c in codes if not _COUNTRY_RE.match(c)]
        if bad:
            raise ValueError(f"not ISO 3166 alpha-2 country codes: {bad}: write e.g. 'DE', 'US'")
        return codes

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix") or parts.password:
            raise ValueError(
                "redis_url must be redis://host:port/db without a password (give it through "
                "the environment)"
            )
        return value


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` -> ``postgresql://...`` (what pg_dump and psycopg take)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"
