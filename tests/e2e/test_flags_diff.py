"""``skylift flags diff`` through the real CLI against three regions' real PostgreSQL
databases (migrated with the platform's own migrations, flags written as the admin API
writes them): exactly the differences, exit 4; agreement, exit 0; an unreadable region named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from typer.testing import CliRunner

from skylift.cli.app import app
from skylift.platform.migrate import upgrade
from tests.fixtures.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
# (name, enabled, rollout basis points, description) per region
FLAGS = {
    "eu": [
        ("checkout", True, 10000, ""),
        ("new-ui", True, 3000, "new UI"),
        ("legacy", False, 0, ""),
    ],
    "us": [
        ("checkout", False, 10000, ""),
        ("new-ui", True, 5000, "new UI"),
        ("dark", True, 1000, ""),
    ],
    "asia": [
        ("checkout", True, 10000, ""),
        ("new-ui", True, 3000, "New UI"),
        ("legacy", False, 0, ""),
    ],
}


def region_database(cluster: PostgresCluster, flags: list[tuple[str, bool, int, str]]) -> str:
    name = f"flags_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade(cluster.url(name))
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        for flag in flags:
            conn.execute(
                "INSERT INTO feature_flags (name, enabled, rollout_bp, description, updated_at) "
                "VALUES (%s, %s, %s, %s, now())",
                flag,
            )
    return cluster.url(name)


def write_config(path: Path, urls: dict[str, str]) -> None:
    path.write_text(yaml.safe_dump({"regions": {r: {"database_url": u} for r, u in urls.items()}}))


def flags_diff(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skylift", "flags", "diff", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_flags_diff_shows_exactly_the_differences(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    urls = {region: region_database(postgres_cluster, flags) for region, flags in FLAGS.items()}
    config = tmp_path / "skylift.yaml"
    write_config(config, urls)

    found = flags_diff(config, "-o", "json")
    assert found.returncode == 4, found.stderr
    result = json.loads(found.stdout)
    assert result["same"] is False
    assert {r: v["flags"] for r, v in result["regions"].items()} == {"eu": 3, "us": 3, "asia": 3}
    assert {d["flag"]: d["differs_in"] for d in result["differences"]} == {
        "checkout": ["enabled"],
        "dark": ["missing"],
        "legacy": ["missing"],
        "new-ui": ["rollout"],  # the description differs too, but counts only when asked
    }
    new_ui = next(d for d in result["differences"] if d["flag"] == "new-ui")["regions"]
    assert new_ui["us"] == {"enabled": True, "rollout": 50.0, "description": "new UI"}
    assert next(d for d in result["differences"] if d["flag"] == "dark")["regions"]["eu"] is None

    # the other outcomes in-process (the same typer app, without another interpreter start)
    runner = CliRunner()
    same = runner.invoke(app, ["flags", "diff", "-c", str(config), "-r", "eu", "-r", "asia"])
    assert same.exit_code == 0, same.output
    assert same.stdout.strip() == "flags agree in eu, asia"
    described = runner.invoke(
        app, ["flags", "diff", "-c", str(config), "-r", "eu", "-r", "asia", "--descriptions"]
    )
    assert described.exit_code == 4
    assert described.stdout.splitlines()[1].split()[:2] == ["new-ui", "on"]

    gone = f"absent_{uuid.uuid4().hex[:8]}"
    urls["us"] = postgres_cluster.url(gone)
    write_config(config, urls)
    broken = runner.invoke(app, ["flags", "diff", "-c", str(config)])
    assert broken.exit_code == 1
    assert "region us: cannot read its flags" in broken.stderr and gone in broken.stderr
