"""Platform settings, read once from ``SKYLIFT_PLATFORM_*`` environment variables.

Secrets never appear inline: the database URL may come from a file
(``SKYLIFT_PLATFORM_DATABASE_URL_FILE``), the admin token always does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from skylift.platform.topology import Regions, TopologyError, load_topology

PREFIX = "SKYLIFT_PLATFORM_"
#: A region's controller gives every replica where the region's data lives; the
#: platform's own variables win, these fill in what they leave unset.
REGION_FALLBACKS = {
    "REGION": "SKYLIFT_REGION",
    "DATABASE_URL": "SKYLIFT_REGION_DATABASE_URL",
    "REDIS_URL": "SKYLIFT_REGION_REDIS_URL",
    "STANDBY_DATABASE_URL": "SKYLIFT_REGION_STANDBY_DATABASE_URL",
}


class SettingsError(ValueError):
    """A required setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Argon2Params:
    """argon2id cost. Defaults: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane)."""

    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1


@dataclass(frozen=True)
class PlatformSettings:
    """Everything one replica needs; durations in seconds."""

    database_url: str = field(repr=False)  # may hold a password
    redis_url: str = field(repr=False)
    region: str = "local"
    key_dir: Path = Path(".skylift/platform-keys")
    admin_token_file: Path | None = None
    read_database_url: str | None = field(default=None, repr=False)
    replica: str = "local"
    pool_size: int = 5  # connections per pool (primary and replica each)
    pool_timeout: float = 2.0  # wait for a pooled connection before answering 503
    redis_timeout: float = 1.0  # socket connect/read timeout: a dead Redis never hangs a request
    retry_after: int = 2  # seconds advertised with a 503
    access_ttl: int = 300  # access token lifetime
    refresh_ttl: int = 14 * 24 * 3600  # refresh token lifetime (each rotation restarts it)
    profile_ttl: int = 300  # cached user profile lifetime in Redis
    flags_ttl: int = 30  # cached flag table lifetime in Redis
    login_limit_account: int = 10  # login attempts per account per window
    login_limit_client: int = 50  # login attempts per client address per window
    login_window: int = 60
    trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    argon2: Argon2Params = Argon2Params()
    migrate_on_start: bool = True
    #: every region, zone and edge address; None: a single region, as before regions existed
    regions: Regions | None = None
    #: this region's in-zone streaming standby of another region's database (topology's
    #: ``standby_of``); read during that region's failover, written once promoted
    standby_database_url: str | None = field(default=None, repr=False)
    #: secret shared by every region: keys the e-mail hash of the directory and signs
    #: requests between regions' platforms
    directory_key_file: Path | None = None
    #: where peers' JWKS are cached (and may be seeded): ``<region>.json``; with a
    #: topology it defaults to ``<KEY_DIR>/../peer-jwks``
    peer_jwks_dir: Path | None = None
    peer_timeout: float = 2.0  # each call to a peer's edge (forwarded login, push, JWKS)
    peer_jwks_refresh: float = 60.0  # how often peers' JWKS are fetched again
    standby_check_ttl: float = 1.0  # how long "is the standby promoted?" is cached

    def directory_key(self) -> bytes | None:
        """The directory key's bytes (None when the platform runs as a single region)."""
        if self.directory_key_file is None:
            return None
        key = self.directory_key_file.read_bytes().strip()
        if len(key) < 16:
            raise SettingsError(
                f"{PREFIX}DIRECTORY_KEY_FILE: {self.directory_key_file} holds fewer than 16 bytes"
            )
        return key

    def admin_token(self) -> str | None:
        """The admin bearer token, read from its file (None: admin endpoints are closed)."""
        if self.admin_token_file is None:
            return None
        token = self.admin_token_file.read_text(encoding="utf-8").strip()
        return token or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlatformSettings:
        """Read settings from the environment; :class:`SettingsError` names what is wrong."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(PREFIX + name)
            if value is None and (path := env.get(PREFIX + name + "_FILE")):
                value = Path(path).read_text(encoding="utf-8").strip()
            if value in (None, "") and name in REGION_FALLBACKS:
                value = env.get(REGION_FALLBACKS[name])  # what `skylift up --region` sets
            return value if value not in (None, "") else default

        def need(name: str) -> str:
            value = get(name)
            if value is None:
                raise SettingsError(
                    f"{PREFIX}{name} (or {PREFIX}{name}_FILE) is not set: give the platform "
                    f"its {name.lower().replace('_', ' ')}"
                )
            return value

        def number(name: str, default: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{PREFIX}{name}={raw!r} is not a number") from None

        def integer(name: str, default: int) -> int:
            return int(number(name, default))

        base = Argon2Params()
        admin_file = get("ADMIN_TOKEN_FILE")
        proxies = get("TRUSTED_PROXIES")
        region = get("REGION", "local") or "local"
        regions, standby, directory_key = _regional(get, region)
        key_dir = Path(get("KEY_DIR", ".skylift/platform-keys") or ".")
        jwks_dir = get("PEER_JWKS_DIR") or (
            str(key_dir.parent / "peer-jwks") if regions is not None else None
        )
        return cls(
            database_url=need("DATABASE_URL"),
            redis_url=need("REDIS_URL"),
            region=region,
            key_dir=key_dir,
            admin_token_file=Path(admin_file) if admin_file else None,
            read_database_url=get("READ_DATABASE_URL"),
            replica=get("REPLICA") or env.get("SKYLIFT_REPLICA") or "local",
            pool_size=integer("POOL_SIZE", 5),
            pool_timeout=number("POOL_TIMEOUT", 2.0),
            redis_timeout=number("REDIS_TIMEOUT", 1.0),
            retry_after=integer("RETRY_AFTER", 2),
            access_ttl=integer("ACCESS_TTL", 300),
            refresh_ttl=integer("REFRESH_TTL", 14 * 24 * 3600),
            profile_ttl=integer("PROFILE_TTL", 300),
            flags_ttl=integer("FLAGS_TTL", 30),
            login_limit_account=integer("LOGIN_LIMIT_ACCOUNT", 10),
            login_limit_client=integer("LOGIN_LIMIT_CLIENT", 50),
            login_window=integer("LOGIN_WINDOW", 60),
            trusted_proxies=(
                frozenset(p.strip() for p in proxies.split(",") if p.strip())
                if proxies is not None
                else frozenset({"127.0.0.1", "::1"})
            ),
            argon2=Argon2Params(
                time_cost=integer("ARGON2_TIME_COST", base.time_cost),
                memory_kib=integer("ARGON2_MEMORY_KIB", base.memory_kib),
                parallelism=integer("ARGON2_PARALLELISM", base.parallelism),
            ),
            migrate_on_start=(get("MIGRATE_ON_START", "1") or "1") not in ("0", "false", "no"),
            regions=regions,
            standby_database_url=standby,
            directory_key_file=directory_key,
            peer_jwks_dir=Path(jwks_dir) if jwks_dir else None,
            peer_timeout=number("PEER_TIMEOUT", 2.0),
            peer_jwks_refresh=number("PEER_JWKS_REFRESH", 60.0),
            standby_check_ttl=number("STANDBY_CHECK_TTL", 1.0),
        )


def _regional(
    get: Callable[[str], str | None], region: str
) -> tuple[Regions | None, str | None, Path | None]:
    """The topology, standby URL and directory key file, checked against each other."""
    topology_file, standby = get("TOPOLOGY_FILE"), get("STANDBY_DATABASE_URL")
    key_file = get("DIRECTORY_KEY_FILE")
    if topology_file is None:
        if standby is not None:
            raise SettingsError(f"{PREFIX}STANDBY_DATABASE_URL needs {PREFIX}TOPOLOGY_FILE")
        return None, None, Path(key_file) if key_file else None
    try:
        regions = load_topology(Path(topology_file))
    except TopologyError as exc:
        raise SettingsError(f"{PREFIX}TOPOLOGY_FILE: {exc}") from None
    if region not in regions.topology:
        raise SettingsError(
            f"{PREFIX}REGION={region!r} is not a region of the topology "
            f"({', '.join(regions.topology.names)})"
        )
    if key_file is None:
        raise SettingsError(
            f"{PREFIX}DIRECTORY_KEY_FILE is not set: a platform with a topology needs the "
            "directory key shared by every region"
        )
    if standby is not None and regions.topology.region(region).standby_of is None:
        raise SettingsError(
            f"{PREFIX}STANDBY_DATABASE_URL is set but the topology gives {region} no standby_of"
        )
    return regions, standby, Path(key_file)
