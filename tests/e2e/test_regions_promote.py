"""`skylift region status` and `region promote` against a real primary and streaming standby.

Each test gets its own primary + ``pg_basebackup -R`` standby (promotion is
one-way; the session's shared pair stays untouched for the read-replica tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from skylift.config import load_config
from skylift.regions.promotion import fence_if_superseded, promoted_map, region_state_dir
from tests.fixtures.pg_replica import PrimaryReplica, running_primary_replica
from tests.polling import wait_for
from tests.ports import free_port_block


@pytest.fixture
def pair() -> Iterator[PrimaryReplica]:
    with running_primary_replica() as fresh:
        yield fresh


def write_config(root: Path, pair: PrimaryReplica) -> Path:
    base = free_port_block(50)  # no controller runs: `status` finds nothing listening here
    regions: dict[str, Any] = {
        "eu-west": {
            "zone": "eu",
            "edge": {"listen": f"127.0.0.1:{base + 40}"},
            "database_url": pair.primary.dsn(),
            "standby": {"region": "eu-central", "database_url": pair.replica.dsn()},
            "port_offset": 10,
        },
        "eu-central": {
            "zone": "eu",
            "edge": {"listen": f"127.0.0.1:{base + 41}"},
            "database_url": pair.primary.dsn(),  # its own data does not matter here
            "port_offset": 20,
        },
    }
    config = {
        "project": "promo",
        "state_dir": "state",
        "api": {"listen": f"127.0.0.1:{base}"},
        "haproxy": {"metrics": f"127.0.0.1:{base + 1}"},
        "services": {
            "web": {
                "frontend": f"127.0.0.1:{base + 2}",
                "backend": {
                    "kind": "process",
                    "command": "true {port}",
                    "ports": {"start": base + 3, "end": base + 9},
                },
            }
        },
        "regions": regions,
    }
    path = root / "regions.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "skylift", *args, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def write(dsn: str, value: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (v text)")
        conn.execute("INSERT INTO t VALUES (%s)", (value,))


def test_promote_fences_the_reachable_old_primary(tmp_path: Path, pair: PrimaryReplica) -> None:
    path = write_config(tmp_path, pair)
    write(pair.primary.dsn(), "before")
    status = json.loads(cli(path, "region", "status", "-o", "json").stdout)["regions"]
    west = status["eu-west"]["database"]
    assert west["role"] == "primary" and west["fenced"] is False
    assert west["standby"] == {"region": "eu-central", "role": "standby", "error": None}
    assert west["promoted"] is False
    assert status["eu-west"]["healthy"] is False  # no controller runs: marked, no traceback

    out = cli(path, "region", "promote", "eu-west", "-o", "json")
    report = json.loads(out.stdout)
    assert report["promoted"] is True and report["old_primary_fenced"] is True

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        write(pair.primary.dsn(), "split brain")  # the old primary refuses writes
    write(pair.replica.dsn(), "after")  # the promoted standby takes them
    with psycopg.connect(pair.replica.dsn(), connect_timeout=5) as conn:
        rows = {r[0] for r in conn.execute("SELECT v FROM t").fetchall()}
    assert rows == {"before", "after"}  # the data came along

    status = json.loads(cli(path, "region", "status", "-o", "json").stdout)["regions"]
    west = status["eu-west"]["database"]
    assert west["fenced"] is True and west["promoted"] is True
    assert west["standby"]["role"] == "primary"
    assert west["promotion"]["holder"] == "eu-central"
    loaded = load_config(path)
    for region in ("eu-west", "eu-central"):
        state = region_state_dir(loaded.config, loaded.base_dir, region)
        assert promoted_map(state) == {"eu-west": "eu-central"}
    # the record travels with the data, and the fenced old primary has it too
    for dsn in (pair.replica.dsn(), pair.primary.dsn()):
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            (holder,) = conn.execute(
                "SELECT holder FROM skylift_region_promotions WHERE region = 'eu-west'"
            ).fetchone() or ("",)
        assert holder == "eu-central"

    again = cli(path, "region", "promote", "eu-west")  # idempotent
    assert "already promoted" in again.stdout


def test_an_unreachable_old_primary_fences_itself_when_it_returns(
    tmp_path: Path, pair: PrimaryReplica
) -> None:
    from tests.fixtures.postgres import _pg, _run_as, find_pg_bin

    path = write_config(tmp_path, pair)
    bindir, user = find_pg_bin(), _run_as()
    assert bindir is not None
    data = pair.primary.data_dir
    _pg(user, bindir / "pg_ctl", "stop", "-D", data, "-m", "fast", "-w", "-t", "30")
    out = cli(path, "region", "promote", "eu-west")
    assert "fences itself when its controller starts" in out.stdout
    write(pair.replica.dsn(), "promoted")

    log = data.parent / "primary-again.log"
    options = (
        f"-p {pair.primary.port} -k {pair.primary.socket_dir} -c listen_addresses=127.0.0.1 "
        "-c fsync=off"
    )
    _pg(user, bindir / "pg_ctl", "start", "-D", data, "-w", "-t", "60", "-l", log, "-o", options)
    write(pair.primary.dsn(), "still writable before its region starts")
    # the region's state dir is on another host: only the zone's promoted database knows
    loaded = load_config(path)
    own = region_state_dir(loaded.config, loaded.base_dir, "eu-west") / "promotions.json"
    own.unlink()
    found = fence_if_superseded(loaded.config, loaded.base_dir, "eu-west")
    assert found is not None and found.holder == "eu-central"
    assert found.old_primary_fenced is False
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        write(pair.primary.dsn(), "split brain")
    wait_for(own.exists, 5, "the record written back to the region's own state")


def test_a_running_region_learns_its_promotion_and_fences_and_drains(
    tmp_path: Path, pair: PrimaryReplica
) -> None:
    """A `region promote` run while this region was cut off: the running region's watch
    finds the record in its zone's promoted database, fences its own and drains its pool."""
    import asyncio
    from types import SimpleNamespace

    from skylift.regions.daemon import RegionRuntime
    from skylift.regions.database import Promotion, database_role, promote, record_promotion
    from tests.polling import wait_for_async

    path = write_config(tmp_path, pair)
    loaded = load_config(path)
    # what `region promote` left in the zone while eu-west's host was unreachable
    assert promote(pair.replica.dsn())
    record_promotion(pair.replica.dsn(), Promotion("eu-west", "eu-central", 1.0, False))
    events: list[str] = []
    controller = SimpleNamespace(
        loops={"web": SimpleNamespace(desired=1)},
        autoscalers={},
        ceilings={},
        writer=SimpleNamespace(set_desired=lambda service, n: None),
        recorder=SimpleNamespace(event=lambda kind, message, **_: events.append(kind)),
    )
    runtime = RegionRuntime(loaded, "eu-west", with_edge=False)
    runtime.state_dir.mkdir(parents=True)

    async def scenario() -> None:
        await runtime.start(controller)  # type: ignore[arg-type]
        try:
            await wait_for_async(
                lambda: controller.loops["web"].desired == 0, 20, "eu-west drained"
            )
        finally:
            await runtime.stop(down=False)

    asyncio.run(scenario())
    assert database_role(pair.primary.dsn()).read_only is True
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        write(pair.primary.dsn(), "split brain")
    assert "region_superseded" in events
    assert promoted_map(runtime.state_dir) == {"eu-west": "eu-central"}
