"""Four regions as real hosts running the reference platform, driven as a user would.

Each region (us, eu-west, eu-central, asia) is a network namespace of
:mod:`tests.regions.hosts` with its own PostgreSQL and Redis
(:func:`tests.regions.services.start_region_services`; eu-central holds
eu-west's streaming standby) and runs ``skylift up -c FILE --region NAME
--detach`` inside its namespace: its controller, one platform replica behind
its service HAProxy, and its edge on ``<region address>:8080``. Peer edges are
reached through the harness's delay mesh (40 ms in the EU, 90 ms EU-US,
150 ms EU-Asia), configured as ``regions.X.edge.reach``.

Clients are httpx clients in the root namespace, optionally bound to an extra
source address that ``edge.extra_countries`` maps to a country (FR, DE, US,
JP): the edges see those addresses as the client's.

Every request uses a connection of its own (``Connection: close``). Seen with kept-alive
client connections instead: when a region is killed, the edge closes the client's idle
connection with the dead server connection (httpx: "Server disconnected without
sending a response" on the next request, an ordinary keep-alive close race that
clients retry); when a region's link is cut, a request on the client's kept-alive
connection waits for the edge's ``timeout server`` (30 s) instead of failing over.

The world is built once per test module (its own hosts and services, not the
session's: a promotion is one-way and would leave the session's standby
promoted for later tests).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from tests.polling import wait_for
from tests.regions.hosts import RegionHosts, region_rtt
from tests.regions.services import PG_PORT, REDIS_PORT, STANDBY_PORT, start_region_services

REGIONS: dict[str, str] = {"us": "us", "eu-west": "eu", "eu-central": "eu", "asia": "asia"}
"""Region -> zone."""
COUNTRIES: dict[str, list[str]] = {
    "us": ["US", "CA"],
    "eu-west": ["FR", "GB"],
    "eu-central": ["DE", "AT"],
    "asia": ["JP", "SG"],
}
NEAREST: dict[str, list[str]] = {
    "us": ["eu-west", "eu-central", "asia"],
    "eu-west": ["eu-central", "us", "asia"],
    "eu-central": ["eu-west", "us", "asia"],
    "asia": ["eu-central", "eu-west", "us"],
}
SOURCE_COUNTRIES = ("FR", "DE", "US", "JP")
"""Countries a client can come from (one extra root address each)."""
HOME_OF_COUNTRY = {c: r for r, cs in COUNTRIES.items() for c in cs}

EDGE_PORT = 8080
MESH_PORT = 18080  # + index of the target region, on 127.0.0.1 in every namespace
FRONTEND = "127.0.0.1:8600"
API = "127.0.0.1:8500"
METRICS = "127.0.0.1:8550"
PASSWORD = "correct horse battery staple"
CHECK: dict[str, Any] = {"inter": 0.5, "fall": 2, "rise": 2, "timeout": 0.5, "path": "/livez"}
"""The edges' region checks (the config's ``edge.check``): a dead region is out after
``fall x inter`` = 1 s; the documented failover bound is that plus 1 s."""
FAILOVER_BOUND: float = CHECK["fall"] * CHECK["inter"] + 1.0
DATABASE = "platform"


def zone_of(region: str) -> str:
    return REGIONS[region]


@dataclass
class User:
    """A platform user as the test knows it."""

    email: str
    home: str
    fallback: str | None = None
    access: str = ""
    refresh: str = ""

    @property
    def zone(self) -> str:
        return zone_of(self.home)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


@dataclass
class Outcome:
    """One request's result, transport failures included (never raised)."""

    status: int | None
    region: str | None = None
    route: str | None = None
    body: Any = None
    retry_after: str | None = None
    content_type: str | None = None
    error: str | None = None
    at: float = 0.0

    @property
    def documented_503(self) -> bool:
        return (
            self.status == 503
            and bool(self.retry_after)
            and (self.content_type or "").startswith("application/json")
            and isinstance(self.body, dict)
            and self.body.get("error") == "region_unavailable"
            and {"home_region", "zone", "reason"} <= set(self.body)
        )


def outcome(response: httpx.Response) -> Outcome:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:300]
    return Outcome(
        status=response.status_code,
        region=response.headers.get("X-Skylift-Region"),
        route=response.headers.get("X-Skylift-Route"),
        body=body,
        retry_after=response.headers.get("Retry-After"),
        content_type=response.headers.get("Content-Type"),
        at=time.monotonic(),
    )


@dataclass
class World:
    """The running four-region world (see the module docstring)."""

    hosts: RegionHosts
    root: Path
    path: Path
    sources: dict[str, str]
    """Country -> a root-namespace source address the edges map to it."""
    dsns: dict[str, str]
    """Region -> its primary's platform database (from the root namespace)."""
    standby_dsn: str
    down_regions: set[str] = field(default_factory=set)
    _clients: dict[str | None, httpx.Client] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ CLI
    def skylift(
        self, where: str | None, *args: str, timeout: float = 150.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``skylift ARGS -c FILE`` inside region ``where`` (None: the root namespace)."""
        argv = [sys.executable, "-m", "skylift", *args, "-c", str(self.path)]
        if where is None:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, cwd=self.root
            )
        else:
            result = subprocess.run(
                self.hosts.argv(where, argv), capture_output=True, text=True,
                timeout=timeout, cwd=self.root,
            )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"skylift {' '.join(args)} in {where or 'root'} exited {result.returncode}\n"
                f"{result.stdout}\n{result.stderr}\n{self.logs(where)}"
            )
        return result

    def logs(self, region: str | None, tail: int = 3000) -> str:
        names = [region] if region else list(REGIONS)
        out = []
        for name in names:
            for log in sorted((self.root / "state" / name).glob("**/*.log")):
                out.append(f"--- {log}\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def up(self, region: str) -> None:
        self.skylift(region, "up", "--region", region, "--detach", "--timeout", "120")
        self.down_regions.discard(region)

    def down(self, region: str) -> None:
        self.skylift(region, "down", "--region", region, timeout=90, check=False)

    def kill(self, region: str) -> None:
        """An outage by killing: the region's controller, edge and replicas (its
        PostgreSQL and Redis survive, like databases on hosts of their own)."""
        self.hosts.kill(region)
        self.down_regions.add(region)

    def cut(self, region: str) -> None:
        self.hosts.cut(region)
        self.down_regions.add(region)

    def restore(self, region: str) -> None:
        self.hosts.restore(region)
        self.down_regions.discard(region)

    # ------------------------------------------------------------------ HTTP
    def edge(self, region: str) -> str:
        return f"http://{self.hosts.address(region)}:{EDGE_PORT}"

    def client(self, country: str | None = None) -> httpx.Client:
        """A client from ``country``'s source address (None: pytest's own address,
        which maps to no country)."""
        with self._lock:
            if country not in self._clients:
                transport = httpx.HTTPTransport(
                    local_address=self.sources[country] if country else None
                )
                self._clients[country] = httpx.Client(
                    transport=transport, timeout=httpx.Timeout(8.0), trust_env=False
                )
            return self._clients[country]

    def request(
        self,
        method: str,
        region: str,
        path: str,
        *,
        country: str | None = None,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Outcome:
        """One request through ``region``'s edge; transport failures become an
        :class:`Outcome` with ``error`` set (the tests assert there are none)."""
        # a connection per request: on a kept-alive client connection, a region killed
        # or cut under it shows as a keep-alive close race (kill) or a wait for the
        # edge's `timeout server` (cut); see the module docstring
        hdrs = {"Connection": "close", **(headers or {})}
        if cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        try:
            response = self.client(country).request(
                method, self.edge(region) + path, headers=hdrs, json=json_body
            )
        except httpx.HTTPError as exc:
            return Outcome(None, error=f"{type(exc).__name__}: {exc}", at=time.monotonic())
        return outcome(response)

    # ------------------------------------------------------------------ users
    def signup(
        self,
        edge: str,
        *,
        country: str | None = None,
        selector: str | None = None,
        fallback: str | None = None,
    ) -> tuple[User, Outcome]:
        email = f"u-{uuid.uuid4().hex[:10]}@example.test"
        body: dict[str, Any] = {"email": email, "password": PASSWORD}
        if fallback is not None:
            body["fallback_region"] = fallback
        cookies = {"skylift_region": selector} if selector else None
        result = self.request("POST", edge, "/auth/signup", country=country, cookies=cookies,
                              json_body=body)  # fmt: skip
        home = result.body.get("home_region", "") if isinstance(result.body, dict) else ""
        user = User(email, home, fallback)
        if result.status == 201:  # the directory reaches other regions asynchronously
            last: list[Outcome] = []

            def logged_in() -> bool:
                last[:] = [self.login(user, edge, country=country)]
                return last[0].status == 200

            try:  # every 0.5 s: the platform limits logins per client
                wait_for(logged_in, 15, f"login of {email} via {edge}", every=0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {last}") from None
        return user, result

    def login(self, user: User, edge: str, *, country: str | None = None) -> Outcome:
        result = self.request("POST", edge, "/auth/login", country=country,
                              json_body={"email": user.email, "password": PASSWORD})  # fmt: skip
        if result.status == 200 and isinstance(result.body, dict):
            user.access = result.body["access_token"]
            user.refresh = result.body["refresh_token"]
        return result

    def refresh(self, user: User, edge: str) -> Outcome:
        result = self.request("POST", edge, "/auth/refresh", headers=user.auth(),
                              json_body={"refresh_token": user.refresh})  # fmt: skip
        if result.status == 200 and isinstance(result.body, dict):
            user.access = result.body["access_token"]
            user.refresh = result.body.get("refresh_token", user.refresh)
        return result

    def me(self, user: User, edge: str, **kwargs: Any) -> Outcome:
        return self.request("GET", edge, "/me", headers=user.auth(), **kwargs)

    # ------------------------------------------------------------------ data
    def rows(self, email: str) -> dict[str, list[str]]:
        """Region -> home_region of rows with ``email`` in that region's primary database
        (and ``eu-west@eu-central`` for the standby), for every database reachable now."""
        found: dict[str, list[str]] = {}
        targets = {**self.dsns, "eu-west@eu-central": self.standby_dsn}
        for name, dsn in targets.items():
            host = name.split("@")[-1]
            if self.hosts.is_cut(host):
                continue
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                found[name] = [
                    r[0]
                    for r in conn.execute(
                        "SELECT home_region FROM users WHERE email = %s", (email,)
                    ).fetchall()
                ]
        return found

    def rows_everywhere(self, email: str) -> dict[str, int]:
        """``server/database`` -> rows with ``email``, in every database holding a users table
        on every PostgreSQL server reachable now (primaries and the standby): where a
        user's data is, opt-in copies (``skylift_copy_*``) included."""
        servers = {**self.dsns, "eu-west@eu-central": self.standby_dsn}
        found: dict[str, int] = {}
        for name, dsn in servers.items():
            if self.hosts.is_cut(name.split("@")[-1]):
                continue
            base = dsn.rsplit("/", 1)[0]
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                names = [r[0] for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn "
                    "AND datname NOT IN ('template1', 'postgres')").fetchall()]  # fmt: skip
            for database in names:
                with psycopg.connect(f"{base}/{database}", connect_timeout=3) as conn:
                    if conn.execute("SELECT to_regclass('users')").fetchone() == (None,):
                        continue
                    row = conn.execute(
                        "SELECT count(*) FROM users WHERE email = %s", (email,)
                    ).fetchone()
                found[f"{name}/{database}"] = 0 if row is None else int(row[0])
        return found

    def copy_row(self, region: str, home: str, email: str) -> tuple[str | None, ...] | None:
        """``(fallback_region, display_name)`` of ``email`` in ``region``'s copy of ``home``."""
        database = "skylift_copy_" + home.replace("-", "_")
        dsn = self.dsns[region].rsplit("/", 1)[0] + "/" + database
        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT fallback_region, display_name FROM users WHERE email = %s", (email,)
                ).fetchone()
        except psycopg.OperationalError:
            return None  # no copy database yet
        return None if row is None else tuple(row)

    def standby_display_name(self, email: str) -> str | None:
        """``display_name`` of ``email`` on eu-west's standby (what a failover reads)."""
        with psycopg.connect(self.standby_dsn, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT display_name FROM users WHERE email = %s", (email,)
            ).fetchone()
        return None if row is None else row[0]

    def served_outside_home(self, region: str, home: str, access: str) -> int:
        """Audit records in ``region``'s own log of requests served for ``home``'s users
        outside their home (metadata only), with this ``access`` (e.g. ``read_only``)."""
        with psycopg.connect(self.dsns[region], connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT count(*) FROM audit_log WHERE event = 'served_outside_home' "
                "AND data->>'home_region' = %s AND data->>'access' = %s",
                (home, access),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def close_clients(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def world_config(hosts: RegionHosts, root: Path, sources: dict[str, str]) -> dict[str, Any]:
    """The multi-region file: one region per namespace, peers through the delay mesh."""
    key_file = root / "directory.key"
    regions: dict[str, Any] = {}
    names = list(REGIONS)
    for name, zone in REGIONS.items():
        env = {
            "SKYLIFT_PLATFORM_REGION": name,
            "SKYLIFT_PLATFORM_DATABASE_URL": f"postgresql://skylift@127.0.0.1:{PG_PORT}/{DATABASE}",
            "SKYLIFT_PLATFORM_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
            "SKYLIFT_PLATFORM_KEY_DIR": str(root / "keys" / name),
        }
        if name == "eu-central":
            env["SKYLIFT_PLATFORM_STANDBY_DATABASE_URL"] = (
                f"postgresql://skylift@127.0.0.1:{STANDBY_PORT}/{DATABASE}"
            )
        regions[name] = {
            "zone": zone,
            "countries": COUNTRIES[name],
            "nearest": NEAREST[name],
            "edge": {
                "listen": f"{hosts.address(name)}:{EDGE_PORT}",
                "reach": {
                    other: f"127.0.0.1:{MESH_PORT + i}"
                    for i, other in enumerate(names)
                    if other != name
                },
            },
            "database_url": f"postgresql://skylift@{hosts.address(name)}:{PG_PORT}/{DATABASE}",
            "redis_url": f"redis://{hosts.address(name)}:{REDIS_PORT}/0",
            "services": {"platform": {"backend": {"env": env}}},
        }
    regions["eu-west"]["standby"] = {
        "region": "eu-central",
        "database_url": (
            f"postgresql://skylift@{hosts.address('eu-central')}:{STANDBY_PORT}/{DATABASE}"
        ),
    }
    return {
        "project": "hosts",
        "state_dir": str(root / "state"),
        "interval": "500ms",
        "api": {"listen": API},
        "haproxy": {"metrics": METRICS},
        "edge": {
            "service": "platform",
            # latency mode: anonymous users without selector or country go to the region
            # this edge measures nearest (signup never: it falls to the default)
            "mode": "latency",
            "default_region": "us",
            "check": CHECK,
            "extra_countries": {f"{addr}/32": country for country, addr in sources.items()},
        },
        "failover": {"prewarm": 0},  # 2 cores: no extra replica during the failover test
        "replication": {"every": "2s", "timeout": "5s"},  # opt-in copies (docs/replication.md)
        "services": {
            "platform": {
                "frontend": FRONTEND,
                "replicas": 1,
                "backend": {
                    "kind": "process",
                    "command": f"{sys.executable} -m skylift.platform serve --port {{port}}",
                    "ports": {"start": 23000, "end": 23009},
                    "env": {
                        "SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE": str(key_file),
                        "SKYLIFT_PLATFORM_ARGON2_MEMORY_KIB": "1024",
                        "SKYLIFT_PLATFORM_ARGON2_TIME_COST": "1",
                        "SKYLIFT_PLATFORM_POOL_SIZE": "3",
                        "SKYLIFT_PLATFORM_STANDBY_CHECK_TTL": "0.5",
                    },
                },
                "health": {"path": "/livez", "interval": "500ms", "fall": 2, "rise": 1},
                "drain_timeout": "2s",
                "stop_grace": "3s",
                "start_timeout": "60s",
            }
        },
        "regions": regions,
    }


def _create_databases(dsns: dict[str, str]) -> None:
    for dsn in dsns.values():
        admin = dsn.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")


def _all_keys(world: World, region: str) -> bool:
    path = world.root / "state" / region / "token-keys.json"
    try:
        keys = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return all(keys.get(r) for r in REGIONS)


def _platform_ready(world: World, region: str) -> bool:
    """The region's platform answers through its own edge and holds every peer's keys."""
    result = world.request("GET", region, "/readyz", headers={"X-Skylift-Region": region})
    if result.status != 200 or result.region != region or not isinstance(result.body, dict):
        return False
    return all(result.body.get("peer_keys", {}).values())


@contextlib.contextmanager
def running_world() -> Iterator[World]:
    """Hosts, services and the four regions up; everything stopped afterwards."""
    with RegionHosts.create(list(REGIONS)) as hosts:
        start_region_services(hosts, standbys={"eu-west": "eu-central"})
        names = list(REGIONS)
        hosts.mesh(
            ports={r: EDGE_PORT for r in names},
            listen_ports={r: MESH_PORT + i for i, r in enumerate(names)},
            rtt=region_rtt(REGIONS),
        )
        sources = {country: hosts.add_source_address() for country in SOURCE_COUNTRIES}
        root = hosts.workdir / "world"
        root.mkdir(mode=0o755)
        key_file = root / "directory.key"
        key_file.write_bytes(base64.b64encode(os.urandom(32)))
        key_file.chmod(0o600)
        dsns = {r: f"postgresql://skylift@{hosts.address(r)}:{PG_PORT}/{DATABASE}" for r in names}
        _create_databases(dsns)  # eu-west's reaches its standby by streaming
        standby_dsn = (
            f"postgresql://skylift@{hosts.address('eu-central')}:{STANDBY_PORT}/{DATABASE}"
        )
        path = root / "regions.yaml"
        path.write_text(yaml.safe_dump(world_config(hosts, root, sources), sort_keys=False))
        world = World(hosts, root, path, sources, dsns, standby_dsn)
        try:
            starts = {}
            for r in names:  # in parallel: each region's `up` waits for its own readiness
                argv = [sys.executable, "-m", "skylift", "up", "-c", str(path),
                        "--region", r, "--detach", "--timeout", "150"]  # fmt: skip
                starts[r] = subprocess.Popen(
                    hosts.argv(r, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True, cwd=root,
                )  # fmt: skip
            for region, proc in starts.items():
                out, _ = proc.communicate(timeout=200)
                if proc.returncode != 0:
                    raise AssertionError(f"up {region} failed:\n{out}\n{world.logs(region)}")
            for region in names:
                wait_for(lambda r=region: _platform_ready(world, r), 90, f"{region} ready")  # type: ignore[misc]
            for region in names:  # each edge pinned every region's keys (a reload each)
                wait_for(lambda r=region: _all_keys(world, r), 60, f"{region}'s edge keys")  # type: ignore[misc]
            wait_all_healthy(world)
            yield world
        finally:
            world.close_clients()
            for region in names:
                if hosts.is_cut(region):
                    hosts.restore(region)
            for region in names:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    world.down(region)


def wait_all_healthy(world: World, timeout: float = 30.0) -> None:
    """Every edge routes to every region (its checks of each peer have risen)."""
    for edge in REGIONS:
        for region in REGIONS:

            def routed(e: str = edge, r: str = region) -> bool:
                got = world.request("GET", e, "/livez", headers={"X-Skylift-Region": r})
                return got.status == 200 and got.region == r

            wait_for(routed, timeout, f"{edge}'s edge routing to {region}")


def wait_keys_everywhere(world: World, users: list[User]) -> None:
    """Every edge verifies every region's tokens: ``/me`` of a user of each region through
    each edge is served at home with route ``token`` (the edges' JWKS rounds are done)."""
    for user in users:
        for edge in REGIONS:

            def served(u: User = user, e: str = edge) -> bool:
                result = world.me(u, e)
                return result.status == 200 and result.route == "token" and result.region == u.home

            wait_for(served, 60, f"{user.home} token verified at {edge}")


def describe(results: list[Outcome]) -> str:
    return json.dumps(
        [
            {k: v for k, v in vars(r).items() if k in ("status", "region", "route", "error")}
            for r in results
        ]
    )
