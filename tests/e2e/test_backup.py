"""The shipped example, end to end: a 200 MB database backed up to the fake Bot API
(real limits: 1 message/s per chat, 50 MB uploads, 20 MB downloads) and restored
identically, with the backup process tree's peak memory measured.

Only ``database_url`` and ``api_url`` of ``examples/backup.yaml`` are rewritten,
and the token variable is set, as the acceptance checks do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import yaml
from psycopg import sql

from skylift.backup.postgres import database_stats
from tests.fakes.telegram_bot_api import FakeBotApi, running_fake_bot_api
from tests.fixtures.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
TARGET_SIZE = 200 * 1000 * 1000


def generate_database(cluster: PostgresCluster, size: int) -> str:
    """A database of at least ``size`` bytes of hex text (about 2:1 compressible), server-side."""
    name = f"big_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    rows = size // 150 + 1
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events AS SELECT i AS id, now() - i * interval '1 second' AS at, "
            "md5(random()::text) || md5(random()::text) || md5(random()::text) AS payload "
            "FROM generate_series(1, %s) i",
            (rows,),
        )
        conn.execute(
            "CREATE TABLE accounts AS SELECT i AS id, md5(i::text) AS name "
            "FROM generate_series(1, 10000) i"
        )
        conn.execute("VACUUM ANALYZE")
        actual = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert actual is not None and actual[0] >= size, f"generated only {actual} bytes"
    return cluster.dsn(name)


def run_measured(
    argv: list[str], env: dict[str, str], peaks: dict[str, int] | None = None
) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """Run a command; return it, the peak RSS of its whole process tree (bytes) and seconds.

    ``peaks`` receives the peak RSS per process name (the CLI before and the worker after
    its exec, pg_dump), to see where memory goes.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    peak = 0
    try:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                sizes = {_label(p): p.memory_info().rss for p in tree if p.is_running()}
                peak = max(peak, sum(sizes.values()))
                if peaks is not None:
                    for label, rss in sizes.items():
                        peaks[label] = max(peaks.get(label, 0), rss)
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.02)  # sampling interval of the memory probe, not synchronisation
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - started
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), peak, seconds


def _label(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    return "worker" if "skylift.backup.worker" in command else process.name()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeBotApi]:
    with running_fake_bot_api(tmp_path / "telegram") as fake:  # the real 1 message/s per chat
        yield fake


def example_config(tmp_path: Path, database_url: str, api_url: str) -> tuple[Path, int]:
    data = yaml.safe_load((ROOT / "examples" / "backup.yaml").read_text())
    region = data["regions"]["eu"]
    region["database_url"] = database_url
    region["backup"]["telegram"]["api_url"] = api_url
    path = tmp_path / "backup.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, int(region["backup"]["telegram"]["chat_id"])


def test_example_round_trip_of_a_200mb_database_in_bounded_memory(
    tmp_path: Path, fake: FakeBotApi, postgres_cluster: PostgresCluster
) -> None:
    source = generate_database(postgres_cluster, TARGET_SIZE)
    config, chat = example_config(tmp_path, source, fake.url)
    token = fake.add_bot([chat])
    env = {**os.environ, "SKYLIFT_EU_BOT_TOKEN": token, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "skylift", "backup"]

    keygen = subprocess.run(
        [*cli, "keygen", "-c", str(config), "--region", "eu"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert keygen.returncode == 0, keygen.stderr

    peaks: dict[str, int] = {}
    run, peak, seconds = run_measured(
        [*cli, "run", "-c", str(config), "--region", "eu", "-o", "json"], env, peaks
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["raw_bytes"] > 150 * 1000 * 1000 and result["parts"] >= 3
    assert token not in run.stdout + run.stderr
    print(
        f"\nbackup: {result['raw_bytes'] / 1e6:.0f} MB dumped -> {result['bytes'] / 1e6:.0f} MB "
        f"in {result['parts']} parts, {seconds:.1f}s, peak RSS of the process tree "
        f"{peak / MIB:.1f} MiB "
        f"({', '.join(f'{k} {v / MIB:.1f}' for k, v in peaks.items())})"
    )
    assert peak < 100 * MIB, f"backup peak RSS {peak / MIB:.1f} MiB"

    stored = [m for m in fake.messages(chat)]
    assert len(stored) == result["parts"] + 1
    assert all(fake.files[m.file_id].size <= 19 * MIB for m in stored)

    target = postgres_cluster.dsn(f"restored_{uuid.uuid4().hex[:8]}")
    restore, restore_peak, restore_seconds = run_measured(
        [*cli, "restore", "-c", str(config), "--region", "eu", "--target", target, "-o", "json"],
        env,
    )
    assert restore.returncode == 0, restore.stderr
    print(f"restore: {restore_seconds:.1f}s, peak RSS {restore_peak / MIB:.1f} MiB")
    assert restore_peak < 100 * MIB, f"restore peak RSS {restore_peak / MIB:.1f} MiB"
    assert database_stats(target) == database_stats(source)
