"""Backup throughput and peak memory: `skylift backup run` next to `pg_dump` alone.

For each database size (default 200 MB and 1 GB, generated server-side as
hex text that compresses about 2:1): a throwaway PostgreSQL 15, the FAKE Bot
API from tests/fakes (real limits: 1 message/s per chat, 50 MB uploads,
20 MB downloads; it runs in this process and writes parts to a temp dir), and
examples/backup.yaml with only database_url and api_url rewritten. Measured
in the same run, one after the other:

  pg_dump -Fc > /dev/null       pg_dump alone, with its default compression
  skylift backup run            pg_dump -Fc -Z0 | zstd -3 | AES-256-GCM | 19 MiB parts | upload
  skylift backup restore        download, check, decrypt, pg_restore into a new database

Throughput is the database size (pg_database_size) over wall-clock seconds.
Peak memory is the largest sum of RSS over the command's process tree,
sampled every 20 ms with psutil (the CLI, its lean backup worker after exec,
pg_dump, psql).

Run: .venv/bin/python benchmarks/backup_throughput.py [--sizes 200,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_backup import example_config, generate_database  # noqa: E402
from tests.fakes.telegram_bot_api import running_fake_bot_api  # noqa: E402
from tests.fixtures.postgres import find_pg_bin, running_cluster  # noqa: E402

MIB = 1024 * 1024


def measured(
    argv: list[str], env: dict[str, str], stdout: int | None = None
) -> tuple[str, float, int]:
    """Run ``argv``; its stdout, seconds and peak RSS of its process tree."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return out or "", seconds, peak


def database_size(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def bench_size(cluster: object, tmp: Path, megabytes: int) -> list[str]:
    source = generate_database(cluster, megabytes * 1000 * 1000)  # type: ignore[arg-type]
    size = database_size(source)
    bindir = find_pg_bin()
    assert bindir is not None
    rows = []
    with running_fake_bot_api(tmp / f"tg-{megabytes}") as fake:
        config, chat = example_config(tmp, source, fake.url)
        (tmp / "keys").mkdir(exist_ok=True)
        token = fake.add_bot([chat])
        env = {**os.environ, "SKYLIFT_EU_BOT_TOKEN": token, "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "skylift", "backup"]
        key = tmp / "keys" / "eu.key"
        if not key.exists():
            subprocess.run(
                [*cli, "keygen", "-c", str(config), "--region", "eu"], env=env, check=True
            )

        with open(os.devnull, "wb") as null:
            _, dump_s, dump_peak = measured(
                [str(bindir / "pg_dump"), "-Fc", f"--dbname={source}"], env, stdout=null.fileno()
            )
        rows.append(
            f"| {size / 1e6:.0f} MB | `pg_dump -Fc > /dev/null` | {dump_s:.1f} | "
            f"{size / 1e6 / dump_s:.1f} | {dump_peak / MIB:.1f} | - |"
        )

        out, run_s, run_peak = measured(
            [*cli, "run", "-c", str(config), "--region", "eu", "-o", "json"], env
        )
        result = json.loads(out)
        rows.append(
            f"| {size / 1e6:.0f} MB | `skylift backup run` | {run_s:.1f} | "
            f"{size / 1e6 / run_s:.1f} | {run_peak / MIB:.1f} | {result['raw_bytes'] / 1e6:.0f} MB "
            f"dump -> {result['bytes'] / 1e6:.0f} MB in {result['parts']} parts |"
        )

        target = cluster.dsn(f"restored_{uuid.uuid4().hex[:8]}")  # type: ignore[attr-defined]
        _, restore_s, restore_peak = measured(
            [*cli, "restore", "-c", str(config), "--region", "eu", "--target", target], env
        )
        rows.append(
            f"| {size / 1e6:.0f} MB | `skylift backup restore` | {restore_s:.1f} | "
            f"{size / 1e6 / restore_s:.1f} | {restore_peak / MIB:.1f} | pg_restore into a new db |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,1000", help="database sizes in MB")
    args = parser.parse_args()
    header = [
        f"`.venv/bin/python benchmarks/backup_throughput.py` ({platform.machine()}, "
        f"{psutil.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| database | command | seconds | MB/s | peak RSS MiB | notes |",
        "|---:|---|---:|---:|---:|---|",
    ]
    rows: list[str] = []
    with running_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        for megabytes in (int(s) for s in args.sizes.split(",")):
            rows += bench_size(cluster, Path(tmp), megabytes)
            print("\n".join(rows[-3:]), file=sys.stderr, flush=True)
    print("\n".join(header + rows))


if __name__ == "__main__":
    main()
