"""Three regions' platforms as real servers on real PostgreSQL and Redis.

eu-west and eu-central share zone ``eu``; eu-central holds eu-west's database
as a real streaming standby (pg_basebackup -R); us is zone ``us`` and the
default. Each platform is ``python -m skylift.platform serve`` on loopback with
its own database, Redis database, keys and the shared topology. There is no
edge here (another slice): each region's "edge" address in the topology is its
platform, and the edge's headers are sent by a client bound to 127.0.0.2, the
platforms' only trusted proxy; a client on 127.0.0.1 stands for anyone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from argon2 import PasswordHasher

from tests.fixtures.pg_replica import PrimaryReplica, running_primary_replica
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.redis import running_redis
from tests.polling import wait_for
from tests.ports import free_port

PASSWORD = "correct horse battery"
EDGE = "127.0.0.2"  # the trusted proxy's address (the edge, simulated)
DIRECTORY_KEY = b"test-directory-key-0123456789abcdef"


@dataclass
class Region:
    name: str
    port: int
    dsn: str  # libpq URL of this region's own database
    log: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def edge(self, **headers: str) -> httpx.Client:
        """A client calling from the trusted proxy's address, with the edge's headers."""
        transport = httpx.HTTPTransport(local_address=EDGE)
        return httpx.Client(base_url=self.base, transport=transport, headers=headers, timeout=10)

    def anyone(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=headers, timeout=10)


@dataclass
class Regions:
    by_name: dict[str, Region]
    pair: PrimaryReplica  # eu-west's primary and eu-central's standby of it

    def __getitem__(self, name: str) -> Region:
        return self.by_name[name]

    @property
    def standby_dsn(self) -> str:
        return self.pair.replica.dsn("platform")


def _rows(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, args).fetchall()


def _topology(ports: dict[str, int]) -> dict[str, Any]:
    def region(name: str, zone: str, countries: list[str], nearest: list[str], standby: Any) -> Any:
        return {"name": name, "zone": zone, "countries": countries, "nearest": nearest,
                "standby_of": standby, "edge": f"127.0.0.1:{ports[name]}"}  # fmt: skip

    return {
        "default": "us",
        "mode": "latency",  # sign-ups never use latency: the test sends none anyway
        "regions": [
            region("eu-west", "eu", ["FR"], ["eu-central", "us"], None),
            region("eu-central", "eu", ["DE"], ["eu-west", "us"], "eu-west"),
            region("us", "us", ["US"], ["eu-west", "eu-central"], None),
        ],
    }


def _ready(region: Region) -> bool:
    assert region.process is not None
    if region.process.poll() is not None:
        raise AssertionError(f"{region.name} exited:\n{region.log.read_text()[-3000:]}")
    try:
        r = httpx.get(f"{region.base}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    # ready, and holding every peer's token keys (a token from any region verifies)
    return r.status_code == 200 and all(r.json()["peer_keys"].values())


@pytest.fixture(scope="module")
def regions(postgres_cluster: PostgresCluster) -> Iterator[Regions]:
    base = Path(tempfile.mkdtemp(prefix="skylift-regions-"))
    with contextlib.ExitStack() as stack:
        pair = stack.enter_context(running_primary_replica())
        redis = stack.enter_context(running_redis())
        with psycopg.connect(pair.primary.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE platform")
        own = {"eu-west": pair.primary.dsn("platform")}
        with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
            for name in ("eu-central", "us"):
                db = f"regions_{name.replace('-', '_')}_{os.getpid()}"
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{db}"')
                own[name] = postgres_cluster.dsn(db)
        ports = {name: free_port() for name in own}
        (base / "topology.json").write_text(json.dumps(_topology(ports)))
        (base / "directory-key").write_bytes(DIRECTORY_KEY)
        by_name: dict[str, Region] = {}
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYLIFT_PLATFORM_")}
        for index, (name, dsn) in enumerate(own.items()):
            region = Region(name, ports[name], dsn, base / f"{name}.log")
            region.env = {
                **clean,
                "SKYLIFT_PLATFORM_REGION": name,
                "SKYLIFT_PLATFORM_DATABASE_URL": dsn,
                "SKYLIFT_PLATFORM_REDIS_URL": redis.url(index),
                "SKYLIFT_PLATFORM_KEY_DIR": str(base / name / "keys"),
                "SKYLIFT_PLATFORM_TOPOLOGY_FILE": str(base / "topology.json"),
                "SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE": str(base / "directory-key"),
                "SKYLIFT_PLATFORM_PEER_JWKS_DIR": str(base / name / "peer-jwks"),
                "SKYLIFT_PLATFORM_TRUSTED_PROXIES": EDGE,
                "SKYLIFT_PLATFORM_ARGON2_MEMORY_KIB": "1024",
                "SKYLIFT_PLATFORM_ARGON2_TIME_COST": "1",
                "SKYLIFT_PLATFORM_POOL_SIZE": "3",
                "SKYLIFT_REPLICA": name,
            }
            if name == "eu-central":
                region.env["SKYLIFT_PLATFORM_STANDBY_DATABASE_URL"] = pair.replica.dsn("platform")
            by_name[name] = region
        try:
            for region in by_name.values():
                with region.log.open("wb") as log:
                    region.process = subprocess.Popen(
                        [sys.executable, "-m", "skylift.platform", "serve",
                         "--port", str(region.port)],
                        env=region.env, stdout=log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
            for region in by_name.values():
                wait_for(lambda r=region: _ready(r), 60, f"{region.name} ready")  # type: ignore[misc]
            yield Regions(by_name, pair)
        finally:
            for region in by_name.values():
                if region.process is not None:
                    region.process.terminate()
            for region in by_name.values():
                if region.process is not None:
                    try:
                        region.process.wait(15)
                    except subprocess.TimeoutExpired:
                        region.process.kill()
                        region.process.wait()
                print(f"--- {region.name} log ---\n{region.log.read_text()[-4000:]}")
            with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
                for name in ("eu-central", "us"):
                    db = own[name].rsplit("/", 1)[1]
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _users_with(dsn: str, email: str) -> list[tuple[Any, ...]]:
    return _rows(dsn, "SELECT home_region FROM users WHERE email = %s", email)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_signup_stays_home_directory_replicates_and_login_works_anywhere(
    regions: Regions,
) -> None:
    west, central, us = regions["eu-west"], regions["eu-central"], regions["us"]
    email = "ada@example.fr"
    creds = {"email": email, "password": PASSWORD}

    # a French client (country from the edge) signs up in eu-west: the row is there only
    with west.edge(**{"X-Skylift-Country": "FR"}) as http:
        r = http.post("/auth/signup", json=creds)
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    assert r.json()["home_region"] == "eu-west"
    assert _users_with(west.dsn, email) == [("eu-west",)]
    assert _users_with(central.dsn, email) == [] and _users_with(us.dsn, email) == []

    # the selector beats the country; the guard refuses a sign-up that belongs elsewhere
    with us.edge(**{"X-Skylift-Region": "eu-west", "X-Skylift-Country": "US"}) as http:
        r = http.post("/auth/signup", json={"email": "bob@example.com", "password": PASSWORD})
    assert r.status_code == 421
    assert r.json()["home_region"] == "eu-west" and r.json()["error"] == "misdirected"
    # ... the cookie as forwarded by the edge, too
    # (and opting in to a cross-zone fallback at sign-up: the token carries it as xr)
    carl = {"email": "carl@example.de", "password": PASSWORD}
    with central.edge() as http:
        http.cookies.set("skylift_region", "eu-central")
        r = http.post("/auth/signup", json={**carl, "fallback_region": "us"})
        assert r.status_code == 201 and r.json()["home_region"] == "eu-central"
        assert _claims(http.post("/auth/login", json=carl).json()["access_token"])["xr"] == "us"
    assert _users_with(central.dsn, "carl@example.de") == [("eu-central",)]
    # headers from anyone but the trusted proxy are ignored: no country, so the default (us)
    with west.anyone(**{"X-Skylift-Country": "FR"}) as http:
        r = http.post("/auth/signup", json={"email": "eve@example.com", "password": PASSWORD})
    assert r.status_code == 421 and r.json()["home_region"] == "us"
    assert _users_with(west.dsn, "eve@example.com") == []

    # the directory entry reaches every other region: the keyed hash, never the e-mail
    digest = hmac.new(DIRECTORY_KEY, email.encode(), hashlib.sha256).hexdigest()
    for region in (us, central):
        wait_for(
            lambda d=region.dsn: _rows(d, "SELECT 1 FROM directory WHERE email_hash = %s", digest),
            15,
            f"the directory entry in {region.name}",
        )
        table = _rows(region.dsn, "SELECT * FROM directory")
        assert (digest, "eu-west") in [row[:2] for row in table]
        assert email not in repr(table) and "example.fr" not in repr(table)
    wait_for(lambda: not _rows(west.dsn, "SELECT 1 FROM directory_outbox"), 15, "empty outbox")

    # login at us reaches eu-west (forwarded) and returns eu-west's tokens
    with us.anyone() as http:
        r = http.post("/auth/login", json=creds)
        assert r.status_code == 200, r.text
        pair = r.json()
        claims = _claims(pair["access_token"])
        assert (claims["iss"], claims["home_region"]) == ("skylift-platform/eu-west", "eu-west")
        # a wrong password and an unknown e-mail get the very same 401
        wrong = http.post("/auth/login", json={"email": email, "password": "wrong password"})
        unknown = http.post("/auth/login", json={"email": "nobody@x.org", "password": PASSWORD})
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        auth = {"Authorization": f"Bearer {pair['access_token']}"}
        # us verifies eu-west's token (peer JWKS) and refuses the user: 421 naming the home
        me = http.get("/me", headers=auth)
        assert me.status_code == 421, me.text
        assert me.json()["home_region"] == "eu-west"
    logins = _rows(west.dsn, "SELECT actor FROM audit_log WHERE event = 'auth.login'")
    assert (user_id,) in logins  # the login was served by eu-west itself
    with central.anyone() as http:
        assert http.get("/me", headers=auth).status_code == 421  # not failed over: not yours
    with west.anyone() as http:
        me = http.get("/me", headers=auth)
        assert me.status_code == 200 and me.json()["home_region"] == "eu-west"

        # opting in to a cross-zone fallback shows in the tokens from the next refresh on
        opt = http.put("/me/failover", json={"region": "us"}, headers=auth)
        assert opt.status_code == 200 and opt.json()["fallback_region"] == "us"
        assert (
            http.put("/me/failover", json={"region": "eu-central"}, headers=auth).status_code == 400
        )
        r = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert r.status_code == 200, r.text
        pair = r.json()
        assert _claims(pair["access_token"])["xr"] == "us"
        auth = {"Authorization": f"Bearer {pair['access_token']}"}
        assert http.put("/me/failover", json={"region": None}, headers=auth).status_code == 200
        r = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert "xr" not in _claims(r.json()["access_token"])


def test_failover_reads_from_the_standby_and_writes_after_promotion(regions: Regions) -> None:
    west, central = regions["eu-west"], regions["eu-central"]
    email = "grace@example.fr"
    creds = {"email": email, "password": PASSWORD}
    with west.edge(**{"X-Skylift-Region": "eu-west"}) as http:
        assert http.post("/auth/signup", json=creds).status_code == 201
        pair = http.post("/auth/login", json=creds).json()
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    user_id = _claims(pair["access_token"])["sub"]
    wait_for(lambda: _users_with(regions.standby_dsn, email), 30, "the user on the standby")

    failover = {"X-Skylift-Route": "failover", "X-Skylift-Home": "eu-west"}
    with regions["us"].edge(**failover) as http:
        # failed over to a region with no copy (an opt-in fallback before the cross-region
        # copy exists): the edge's documented 503, never served, never a bare 421
        me = http.get("/me", headers=auth)
        assert me.status_code == 503 and me.headers["retry-after"], me.text
        assert me.json() == {
            "error": "region_unavailable",
            "home_region": "eu-west",
            "zone": "eu",
            "reason": me.json()["reason"],
        }
    with central.edge(**failover) as http:
        # reads come from the standby: eu-central's own database never had this user
        me = http.get("/me", headers=auth)
        assert me.status_code == 200, me.text
        assert (me.json()["email"], me.json()["home_region"]) == (email, "eu-west")
        assert _users_with(central.dsn, email) == []
        # writes wait for the promotion: 503 + Retry-After + why
        patch = http.patch("/me", json={"display_name": "Grace"}, headers=auth)
        assert patch.status_code == 503
        assert int(patch.headers["retry-after"]) >= 1
        assert patch.json()["error"] == "read_only" and patch.json()["home_region"] == "eu-west"
        # a login during the failover is served here, from the standby
        login = http.post("/auth/login", json=creds)
        assert login.status_code == 200, login.text
        assert _claims(login.json()["access_token"])["home_region"] == "eu-west"
    # the failover header from anyone but the edge changes nothing
    with central.anyone(**failover) as http:
        assert http.get("/me", headers=auth).status_code == 421

    # served outside home: written at once to the serving region's audit log, metadata only
    audit = _rows(
        central.dsn,
        "SELECT actor, data FROM audit_log WHERE event = 'served_outside_home' ORDER BY seq",
    )
    assert audit and audit[0][0] == user_id
    data = audit[0][1]
    assert data["tag"] == "served_outside_home" and data["home_region"] == "eu-west"
    assert (data["method"], data["path"], data["access"]) == ("GET", "/me", "read_only")
    assert email not in json.dumps([row[1] for row in audit])

    # promote the standby: the next write is served by eu-central, into the promoted copy
    with psycopg.connect(regions.standby_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_promote()")
    with central.edge(**failover) as http:

        def write() -> bool:
            r = http.patch("/me", json={"display_name": "Grace"}, headers=auth)
            assert r.status_code in (200, 503), r.text
            return r.status_code == 200

        wait_for(write, 15, "a write accepted after the promotion")
    names = _rows(regions.standby_dsn, "SELECT display_name FROM users WHERE email = %s", email)
    assert names == [("Grace",)]
    assert _users_with(central.dsn, email) == []


def test_users_from_before_the_topology_are_added_to_the_directory(regions: Regions) -> None:
    west, us = regions["eu-west"], regions["us"]
    email = "legacy@example.com"
    hashed = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    with psycopg.connect(us.dsn, autocommit=True) as conn:  # as a sign-up without regions left it
        conn.execute(
            "INSERT INTO users (id, email, password_hash, home_region, created_at, updated_at) "
            "VALUES (gen_random_uuid(), %s, %s, 'us', now(), now())",
            (email, hashed),
        )
    digest = hmac.new(DIRECTORY_KEY, email.encode(), hashlib.sha256).hexdigest()
    wait_for(
        lambda: _rows(west.dsn, "SELECT home_region FROM directory WHERE email_hash = %s", digest),
        15,
        "the backfilled entry in eu-west",
    )
    with west.anyone() as http:
        r = http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert _claims(r.json()["access_token"])["iss"] == "skylift-platform/us"
