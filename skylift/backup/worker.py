"""The process that runs ``backup run``, ``restore`` and ``verify``: lean, so memory stays bounded.

The CLI validates the config and then replaces itself (``exec``) with this
module, which imports only what a backup needs (no engine, numpy, typer or
alembic): the process's peak memory is its imports plus one part in flight,
whatever the database's size. The job arrives as JSON in
``SKYLIFT_BACKUP_JOB`` and holds no secret, only where the token and key are.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skylift.backup.context import RegionContext
    from skylift.backup.index import BackupIndex
    from skylift.backup.telegram import BotApi

Outcome = tuple[dict[str, Any], str, int]  # -o json data, table text, exit code

JOB_ENV = "SKYLIFT_BACKUP_JOB"
# glibc: a fixed mmap threshold returns each freed 1 MiB buffer to the kernel at once
# (the dynamic one would keep them in a growing heap), and two arenas for two threads
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def run_job(job: dict[str, Any], *, own_process: bool = False) -> Outcome:
    """Run what ``job`` describes; returns the ``-o json`` data, the table text, the exit code.

    ``own_process``: this is the exec'd worker, free to drop the token from its environment.
    """
    from skylift.backup.context import RegionContext
    from skylift.backup.index import BackupIndex

    ctx = RegionContext.from_job(job["context"])
    state_dir = Path(job["state_dir"])
    work_dir = state_dir / "backup-tmp"
    work_dir.mkdir(parents=True, exist_ok=True)
    command = job["command"]
    if command == "run":
        ctx.key()  # fail before dumping when the key or the token is missing
    bot = ctx.bot()
    token_env = ctx.backup.telegram.bot_token_env
    if token_env and own_process:  # read once: pg_dump, psql, pg_restore need not inherit it
        os.environ.pop(token_env, None)
    with bot, BackupIndex.open(job["store_url"], state_dir, migrate=False) as index:
        if command == "run":
            return _run(ctx, index, bot, work_dir, job)
        if command == "restore":
            return _restore(ctx, index, bot, work_dir, job)
        if command == "verify":
            return _verify(ctx, index, bot, work_dir, job)
    raise ValueError(f"unknown worker command {command!r}")


def _run(
    ctx: RegionContext, index: BackupIndex, bot: BotApi, work_dir: Path, job: dict[str, Any]
) -> Outcome:
    from skylift.backup import retention
    from skylift.backup.run import run_backup

    prune = bool(job.get("prune", True))
    result = run_backup(
        ctx, index, bot, work_dir=work_dir, fresh=bool(job.get("fresh")), prune=prune
    )
    expired = (
        retention.apply(index, bot, ctx.name, ctx.chat_id, ctx.backup.retention, now=time.time)
        if prune
        else []
    )
    data = {**result.as_dict(), "expired": [e.as_dict() for e in expired]}
    table = (
        f"backup {result.id}: {result.parts} part(s), {result.bytes} bytes "
        f"({result.raw_bytes} dumped, {result.reused_parts} reused) in {result.seconds:.1f}s"
        + (f"; expired {', '.join(e.id for e in expired)}" if expired else "")
    )
    return data, table, EXIT_OK


def _restore(
    ctx: RegionContext, index: BackupIndex, bot: BotApi, work_dir: Path, job: dict[str, Any]
) -> Outcome:
    from skylift.backup.restore import find_manifest, restore

    from_telegram = bool(job.get("from_telegram"))
    manifest = find_manifest(
        ctx, bot, None if from_telegram else index, job.get("backup"), from_telegram=from_telegram
    )
    result = restore(
        ctx, bot, manifest, job["target"], work_dir=work_dir, force=bool(job.get("force"))
    )
    data = result.as_dict()
    table = (
        f"restored backup {result.id} ({result.parts} part(s), {result.raw_bytes} bytes) "
        f"into {data['target']} in {result.seconds:.1f}s"
    )
    return data, table, EXIT_OK


def _verify(
    ctx: RegionContext, index: BackupIndex, bot: BotApi, work_dir: Path, job: dict[str, Any]
) -> Outcome:
    from skylift.backup.restore import find_manifest, verify

    manifest = find_manifest(ctx, bot, index, job.get("backup"))
    result = verify(
        ctx,
        bot,
        manifest,
        work_dir=work_dir,
        scratch_url=job.get("scratch_url"),
        keep=bool(job.get("keep")),
    )
    verdict = "ok" if result.ok else "FAILED"
    table = f"verify {result.id}: {verdict} ({result.tables} tables, {result.rows} rows)"
    if result.mismatches:
        table += "\n" + "\n".join(f"  {m}" for m in result.mismatches)
    return result.as_dict(), table, EXIT_OK if result.ok else EXIT_FAILURE


def main() -> int:
    from skylift.backup.context import UnknownRegion
    from skylift.backup.errors import BackupError
    from skylift.logs import configure_logging

    job = json.loads(os.environ.pop(JOB_ENV))
    configure_logging(job.get("log_level", "info"), bool(job.get("log_json")))
    try:
        data, table, code = run_job(job, own_process=True)
    except UnknownRegion as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(data, indent=2) if job.get("output") == "json" else table)
    return code


if __name__ == "__main__":
    sys.exit(main())
