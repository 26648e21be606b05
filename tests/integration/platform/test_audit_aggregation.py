"""Cross-region audit aggregation on three real platforms, each on its own PostgreSQL database.

``us`` aggregates; ``eu-west`` and ``us`` opted in; ``asia`` did not. Each
platform is ``python -m skylift.platform serve``; as in
``test_platform_regions.py`` each region's "edge" in the topology is its
platform, and the edge's headers come from a client bound to 127.0.0.2 (the
trusted proxy). The aggregator is the real CLI, run with us's platform
settings. Users sign up, log in and set their names in each region with known
e-mails, names and client addresses, and one record carries a payload of
personal data: none of it may appear in anything the aggregator stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from skylift.platform import audit, peers
from skylift.platform.audit_export import EXPORT_PATH, EXPORTED
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.redis import running_redis
from tests.polling import wait_for
from tests.ports import free_port

PASSWORD = "correct horse battery"
EDGE = "127.0.0.2"
DIRECTORY_KEY = b"audit-agg-directory-key-0123456789"
COUNTRY = {"eu-west": "FR", "us": "US", "asia": "JP"}
AGGREGATOR, OPTED_IN = "us", ("eu-west", "us")


@dataclass
class Region:
    name: str
    port: int
    dsn: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    #: every piece of personal data the test put into this region
    personal: list[str] = field(default_factory=list)

    def edge(self, client_ip: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            transport=httpx.HTTPTransport(local_address=EDGE),
            headers={"X-Skylift-Region": self.name, "X-Forwarded-For": client_ip},
            timeout=10,
        )


def _topology(ports: dict[str, int]) -> dict[str, Any]:
    def region(name: str, zone: str, nearest: list[str]) -> dict[str, Any]:
        return {"name": name, "zone": zone, "countries": [COUNTRY[name]], "nearest": nearest,
                "standby_of": None, "edge": f"127.0.0.1:{ports[name]}"}  # fmt: skip

    return {
        "default": "us",
        "mode": "geo",
        "regions": [
            region("eu-west", "eu", ["us", "asia"]),
            region("us", "us", ["eu-west", "asia"]),
            region("asia", "asia", ["us", "eu-west"]),
        ],
        "audit_aggregation": {"region": AGGREGATOR, "regions": list(OPTED_IN)},
    }


def _ready(region: Region) -> bool:
    assert region.process is not None
    if region.process.poll() is not None:
        raise AssertionError(f"{region.name} exited:\n{region.log.read_text()[-3000:]}")
    try:
        r = httpx.get(f"http://127.0.0.1:{region.port}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and all(r.json()["peer_keys"].values())


def _rows(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, args).fetchall()


def _execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


async def _append(dsn: str, region: str, data: dict[str, Any]) -> None:
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, row_factory=dict_row
    ) as conn:
        await audit.append(conn, region=region, event="app.note", actor=None, data=data)


def _populate(region: Region, index: int) -> None:
    """A user's life in the region: sign-up, logins from known addresses, a name, a payload."""
    email = f"person{index}.{region.name}@example.org"
    name = f"Ada Lovelace-{region.name}"
    ips = [f"198.51.100.{10 + index}", f"2001:db8::{index}:7"]
    with region.edge(ips[0]) as http:
        r = http.post("/auth/signup", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]
        assert r.json()["home_region"] == region.name
    with region.edge(ips[1]) as http:
        r = http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = http.patch("/me", json={"display_name": name}, headers=auth)
        assert r.status_code == 200, r.text
    payload = f"order 4411 for {name}, 1 Main Street"
    asyncio.run(_append(region.dsn, region.name, {"email": email, "ip": ips[0], "note": payload}))
    region.personal += [email, name, *ips, payload, user_id]


@dataclass
class World:
    regions: dict[str, Region]
    base: Path

    def cli(self, *args: str, subprocess_: bool = False) -> subprocess.CompletedProcess[str]:
        """``skylift platform audit ...`` as an operator runs it in the aggregating region.

        ``subprocess_``: the real ``python -m skylift`` (the path a user takes, a second or
        more of imports on a busy machine); else the same typer app in this process.
        """
        argv = ["platform", "audit", *args]
        env = self.regions[AGGREGATOR].env
        if subprocess_:
            return subprocess.run(
                [sys.executable, "-m", "skylift", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        from typer.testing import CliRunner

        from skylift.cli.app import app

        platform_env = {k: v for k, v in env.items() if k.startswith("SKYLIFT_PLATFORM_")}
        result = CliRunner().invoke(app, argv, env=platform_env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def world(postgres_cluster: PostgresCluster) -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="skylift-auditagg-"))
    names = ("eu-west", "us", "asia")
    dbs = {n: f"auditagg_{n.replace('-', '_')}_{os.getpid()}" for n in names}
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(running_redis())
        with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
            for db in dbs.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{db}"')
        ports = {n: free_port() for n in names}
        (base / "topology.json").write_text(json.dumps(_topology(ports)))
        (base / "directory-key").write_bytes(DIRECTORY_KEY)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYLIFT_PLATFORM_")}
        regions: dict[str, Region] = {}
        for index, name in enumerate(names):
            region = Region(
                name, ports[name], postgres_cluster.dsn(dbs[name]), base / f"{name}.log"
            )
            region.env = {
                **clean,
                "SKYLIFT_PLATFORM_REGION": name,
                "SKYLIFT_PLATFORM_DATABASE_URL": region.dsn,
                "SKYLIFT_PLATFORM_REDIS_URL": redis.url(index),
                "SKYLIFT_PLATFORM_KEY_DIR": str(base / name / "keys"),
                "SKYLIFT_PLATFORM_TOPOLOGY_FILE": str(base / "topology.json"),
                "SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE": str(base / "directory-key"),
                "SKYLIFT_PLATFORM_PEER_JWKS_DIR": str(base / name / "peer-jwks"),
                "SKYLIFT_PLATFORM_TRUSTED_PROXIES": EDGE,
                "SKYLIFT_PLATFORM_ARGON2_MEMORY_KIB": "1024",
                "SKYLIFT_PLATFORM_ARGON2_TIME_COST": "1",
                "SKYLIFT_PLATFORM_POOL_SIZE": "2",
                "SKYLIFT_REPLICA": name,
            }
            regions[name] = region
        try:
            for region in regions.values():
                with region.log.open("wb") as log:
                    region.process = subprocess.Popen(
                        [sys.executable, "-m", "skylift.platform", "serve",
                         "--port", str(region.port)],
                        env=region.env, stdout=log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
            for region in regions.values():
                wait_for(lambda r=region: _ready(r), 60, f"{region.name} ready")  # type: ignore[misc]
            for index, region in enumerate(regions.values()):
                _populate(region, index)
            yield World(regions, base)
        finally:
            for region in regions.values():
                if region.process is not None:
                    region.process.terminate()
            for region in regions.values():
                if region.process is not None:
                    try:
                        region.process.wait(15)
                    except subprocess.TimeoutExpired:
                        region.process.kill()
                        region.process.wait()
                print(f"--- {region.name} log ---\n{region.log.read_text()[-3000:]}")
            with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
                for db in dbs.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _aggregator_tables(dsn: str) -> list[str]:
    rows = _rows(
        dsn,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_name LIKE 'audit_agg%%' ORDER BY 1",
    )
    return [str(r[0]) for r in rows]


def _dump(dsn: str, tables: list[str]) -> str:
    """Every row of every table, every column as text: what a scan for personal data reads."""
    out = []
    for table in tables:
        out += [str(row) for row in _rows(dsn, f'SELECT t::text FROM "{table}" t')]
    return "\n".join(out)


def test_query_across_regions_carries_metadata_only(world: World) -> None:
    us, west, asia = (world.regions[n] for n in ("us", "eu-west", "asia"))
    r = world.cli("query", "--all-regions", "-o", "json", subprocess_=True)
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)["records"]
    by_region: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_region.setdefault(rec["region"], []).append(rec)
    assert set(by_region) == {"eu-west", "us"}  # asia did not opt in
    for name in OPTED_IN:
        events = [rec["event"] for rec in by_region[name]]
        assert events == ["auth.signup", "auth.login", "user.update", "app.note"], events
        assert set(by_region[name][0]) == {"region", "seq", "ts", "event", "actor", "hash"}
        # one actor, one pseudonym within the region (signup, login, update)
        actors = {rec["actor"] for rec in by_region[name][:3]}
        assert len(actors) == 1 and None not in actors
        assert [rec["seq"] for rec in by_region[name]] == [1, 2, 3, 4]
    assert by_region["eu-west"][0]["actor"] != by_region["us"][0]["actor"]
    # the hashes are the regions' own chain hashes
    west_hashes = [row[0] for row in _rows(west.dsn, "SELECT hash FROM audit_log ORDER BY seq")]
    assert [rec["hash"] for rec in by_region["eu-west"]] == west_hashes

    # filters, answered from the aggregator's store
    r = world.cli("query", "--all-regions", "--event", "auth.login", "--region", "eu-west",
                  "--no-pull", "-o", "json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    only = json.loads(r.stdout)["records"]
    assert [(x["region"], x["event"]) for x in only] == [("eu-west", "auth.login")]
    r = world.cli("query", "--all-regions", "--since", "2999-01-01T00:00:00Z", "--no-pull")
    assert r.returncode == 0 and "auth.login" not in r.stdout and "TIME" in r.stdout

    # the PII scan: everything the aggregator stored, and what the CLI printed
    tables = _aggregator_tables(us.dsn)
    assert tables == ["audit_agg_records", "audit_agg_regions"]
    stored = _dump(us.dsn, tables) + "\n" + json.dumps(records)
    assert "eu-west" in stored and west_hashes[0] in stored  # the scan does see the data
    for region in world.regions.values():
        assert region.personal, region.name
        for value in region.personal:
            assert value not in stored, f"{region.name}'s {value!r} reached the aggregator"
    # and nothing of eu-west's or asia's users anywhere in us's database
    everything = _dump(us.dsn, [str(t[0]) for t in _rows(
        us.dsn, "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")])  # fmt: skip
    for value in west.personal + asia.personal:
        assert value not in everything, f"{value!r} is in us's database"

    # asia was never asked: its pseudonym secret (made on the first export) does not exist
    assert _rows(asia.dsn, "SELECT count(*) FROM audit_pseudonym_key") == [(0,)]
    assert _rows(west.dsn, "SELECT count(*) FROM audit_pseudonym_key") == [(1,)]


def test_the_export_endpoint_is_not_open(world: World) -> None:
    west, asia = world.regions["eu-west"], world.regions["asia"]
    good = {"from": AGGREGATOR, "to": "eu-west", "after": 0, "limit": 10, "verify": False}

    def post(region: Region, body: dict[str, Any], signed: bool = True) -> httpx.Response:
        raw = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if signed:
            headers[peers.SIGNATURE] = peers.sign(
                peers.peer_key(DIRECTORY_KEY), method="POST", path=EXPORT_PATH, body=raw,
                now=int(time.time()),
            )  # fmt: skip
        return httpx.post(
            f"http://127.0.0.1:{region.port}{EXPORT_PATH}", content=raw, headers=headers, timeout=10
        )

    assert post(west, good, signed=False).status_code == 401
    answer = post(west, good)  # what crosses the border, as sent
    assert answer.status_code == 200
    assert {tuple(rec) for rec in answer.json()["records"]} == {EXPORTED}
    assert west.personal and not [v for v in west.personal if v in answer.text]
    assert post(west, {**good, "from": "asia"}).status_code == 403  # only the aggregator
    refused = post(asia, {**good, "to": "asia"})
    assert refused.status_code == 403 and "did not opt in" in refused.text
    assert post(west, {**good, "to": "us"}).status_code == 421  # routed to the wrong region
    assert _rows(asia.dsn, "SELECT count(*) FROM audit_pseudonym_key") == [(0,)]


def test_verify_all_regions_names_the_tampered_region_and_row(world: World) -> None:
    us, west = world.regions["us"], world.regions["eu-west"]
    r = world.cli("verify", "--all-regions")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "eu-west: audit chain ok" in r.stdout and "us: audit chain ok" in r.stdout
    assert "asia" not in r.stdout

    # an operator in eu-west edits a record with SQL
    _execute(west.dsn, 'UPDATE audit_log SET data = \'{"client": "10.9.9.9"}\' WHERE seq = 2')
    r = world.cli("verify", "--all-regions", subprocess_=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "eu-west: audit chain BROKEN: first bad record 2" in r.stdout
    assert "record 2: content does not match its hash (edited)" in r.stdout
    assert "us: audit chain ok" in r.stdout

    # in us, the last records are cut off the end: the chain alone still verifies
    _execute(us.dsn, "DELETE FROM audit_log WHERE seq >= 3")
    r = world.cli("verify", "--all-regions", "-o", "json")
    assert r.returncode == 1, r.stdout + r.stderr
    found = {x["region"]: x for x in json.loads(r.stdout)["regions"]}
    assert set(found) == {"eu-west", "us"}
    assert found["eu-west"]["first_bad_seq"] == 2 and not found["eu-west"]["ok"]
    assert not found["us"]["ok"] and found["us"]["first_bad_seq"] == 3
    assert "head moved backwards" in found["us"]["problems"][0]
    stored = _rows(us.dsn, "SELECT ok, first_bad_seq FROM audit_agg_regions ORDER BY region")
    assert stored == [(False, 2), (False, 3)]

    # ... and grows again past what the aggregator saw: nothing of the new chain is stored
    for n in range(3):
        asyncio.run(_append(us.dsn, "us", {"n": n}))
    r = world.cli("query", "--all-regions", "--region", "us", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert "us: record 4: gone, or its hash differs" in r.stderr
    assert [w["region"] for w in json.loads(r.stdout)["warnings"]] == ["us"]
    held = "SELECT seq, hash FROM audit_agg_records WHERE region = 'us' ORDER BY seq"
    before = _rows(us.dsn, held)
    assert [seq for seq, _ in before] == [1, 2, 3, 4]
    r = world.cli("verify", "--all-regions", "--region", "us")
    assert r.returncode == 1 and "us: audit chain BROKEN: first bad record 4" in r.stdout
    assert _rows(us.dsn, held) == before  # the hashes seen first stay as evidence


def test_pull_pages_through_a_long_log_and_stores_each_record_once(
    world: World, postgres_cluster: PostgresCluster
) -> None:
    """In-process aggregator with 2-record pages into a store of its own (the same migration)."""
    from skylift.platform.audit_aggregate import Puller, last_seen, pull_region
    from skylift.platform.migrate import upgrade
    from skylift.platform.topology import load_topology

    west = world.regions["eu-west"]
    for n in range(3):  # 4 + 3 records: four pages of two
        asyncio.run(_append(west.dsn, "eu-west", {"n": n}))
    store_db = f"auditagg_store_{os.getpid()}"
    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{store_db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{store_db}"')
    store = postgres_cluster.dsn(store_db)
    upgrade(store)

    async def pull() -> tuple[Any, Any]:
        regions = load_topology(world.base / "topology.json")
        async with (
            await psycopg.AsyncConnection.connect(
                store, autocommit=True, row_factory=dict_row
            ) as conn,
            peers.http_client(10) as client,
        ):
            puller = Puller("us", regions, peers.peer_key(DIRECTORY_KEY), client, page_size=2)
            first = await pull_region(conn, puller, "eu-west", verify=False)
            again = await pull_region(conn, puller, "eu-west", verify=False)  # nothing new
            return (first, again, await last_seen(conn, "eu-west"))

    try:
        first, again, seen = asyncio.run(pull())
        assert first.ok and first.records == 7 and again.ok and again.records == 0
        hashes = _rows(west.dsn, "SELECT seq, hash FROM audit_log ORDER BY seq")
        assert _rows(store, "SELECT seq, hash FROM audit_agg_records ORDER BY seq") == hashes
        assert (seen.seq, seen.hash) == hashes[-1]
    finally:
        with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{store_db}" WITH (FORCE)')
