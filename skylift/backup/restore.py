"""``backup restore`` and ``backup verify``: fetch, check, decrypt, pg_restore.

Each part is downloaded to a file of at most one part's size and its SHA-256
checked before a byte of it reaches the decryptor; the whole stream's SHA-256
and the authenticated end-of-stream are checked before pg_restore may commit
(it runs with ``--single-transaction`` and is killed, never allowed to see
EOF, when any check fails), so a tampered or missing part leaves the target
untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog
import zstandard

from skylift.backup import postgres
from skylift.backup.context import RegionContext
from skylift.backup.crypto import Decryptor
from skylift.backup.errors import (
    BackupError,
    BackupNotFound,
    IntegrityError,
    PartMissing,
    RestoreRefused,
)
from skylift.backup.index import EXPIRED, LIVE, BackupIndex
from skylift.backup.manifest import Manifest
from skylift.backup.telegram import BotApi
from skylift.config.regions import libpq_url

log = structlog.get_logger("skylift.backup")
BLOCK = 1024 * 1024


@dataclass(frozen=True)
class RestoreResult:
    id: str
    region: str
    target: str
    parts: int
    bytes: int
    raw_bytes: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "region": self.region,
            "target": postgres.masked(self.target),
            "parts": self.parts,
            "bytes": self.bytes,
            "raw_bytes": self.raw_bytes,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class VerifyResult:
    id: str
    region: str
    ok: bool
    tables: int
    rows: int
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "region": self.region,
            "ok": self.ok,
            "tables": self.tables,
            "rows": self.rows,
            "mismatches": self.mismatches,
            "seconds": round(self.seconds, 3),
        }


def _fetch_blob(bot: BotApi, file_id: str, what: str) -> bytes:
    try:
        remote = bot.get_file(file_id)
    except PartMissing:
        raise
    except BackupError as exc:
        raise PartMissing(f"{what} cannot be fetched from Telegram: {exc}") from None
    buffer = io.BytesIO()
    bot.download(remote, buffer)
    return buffer.getvalue()


def find_manifest(
    ctx: RegionContext,
    bot: BotApi,
    index: BackupIndex | None,
    backup_id: str | None,
    *,
    from_telegram: bool = False,
) -> Manifest:
    """The manifest of ``backup_id`` (None: the newest), from the index or the pinned message."""
    key = ctx.key()
    if not from_telegram:
        assert index is not None
        record = index.get(backup_id) if backup_id else index.latest(ctx.name)
        if record.region != ctx.name:
            raise BackupNotFound(
                f"backup {record.id} belongs to region {record.region!r}, not {ctx.name!r}"
            )
        if record.status == EXPIRED:
            raise BackupNotFound(
                f"backup {record.id} expired under the retention policy; its data key was "
                "destroyed in the index: restore a live backup (see `skylift backup list`)"
            )
        if record.status != LIVE or not record.manifest:
            raise BackupNotFound(
                f"backup {record.id} is {record.status}, not complete: it cannot be restored"
                + (f" ({record.error})" if record.error else "")
            )
        info = record.manifest
        blob = _fetch_blob(bot, str(info["file_id"]), f"the manifest of backup {record.id}")
        if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
            raise IntegrityError(
                f"the manifest of backup {record.id} does not match the SHA-256 in the index: "
                "it was altered in Telegram"
            )
        manifest = Manifest.open(key, blob, f"the manifest of backup {record.id}")
    else:
        pinned = bot.get_chat(ctx.chat_id).get("pinned_message") or {}
        document = pinned.get("document") if isinstance(pinned, dict) else None
        if not isinstance(document, dict) or "file_id" not in document:
            raise BackupNotFound(
                f"the chat of region {ctx.name!r} has no pinned skylift manifest: restore "
                "through the index instead (without --from-telegram)"
            )
        blob = _fetch_blob(bot, str(document["file_id"]), "the pinned manifest")
        manifest = Manifest.open(key, blob, "the pinned manifest")
        if backup_id and backup_id != manifest.id:
            entry = next((e for e in manifest.catalog if e.id == backup_id), None)
            if entry is None:
                raise BackupNotFound(
                    f"backup {backup_id} is not in the pinned manifest's catalog of live backups"
                )
            blob = _fetch_blob(bot, entry.manifest_file_id, f"the manifest of backup {backup_id}")
            manifest = Manifest.open(key, blob, f"the manifest of backup {backup_id}")
    if manifest.region != ctx.name:
        raise BackupNotFound(f"manifest {manifest.id} is of region {manifest.region!r}")
    if backup_id and manifest.id != backup_id:
        raise IntegrityError(f"asked for backup {backup_id}, the manifest is of {manifest.id}")
    return manifest


def stream_backup(
    bot: BotApi, manifest: Manifest, work_dir: Path, sink: Callable[[bytes], None]
) -> int:
    """Feed the decrypted, decompressed dump to ``sink``; raise on any mismatch. Returns bytes."""
    numbers = [p.index for p in manifest.parts]
    if numbers != list(range(len(numbers))):
        raise IntegrityError(f"the manifest of {manifest.id} lists parts {numbers}: not contiguous")
    decryptor = Decryptor(manifest.key_bytes())
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    whole = hashlib.sha256()
    total = raw = 0
    count = len(manifest.parts)
    for part in manifest.parts:
        label = f"part {part.index + 1}/{count} of backup {manifest.id}"
        try:
            remote = bot.get_file(part.file_id)
        except PartMissing as exc:
            raise PartMissing(f"{label} is missing from Telegram ({exc})") from None
        except BackupError as exc:
            raise PartMissing(
                f"{label} cannot be fetched from Telegram (missing, too big, or not this "
                f"bot's file): {exc}"
            ) from None
        with tempfile.TemporaryFile(dir=work_dir) as handle:
            try:
                size = bot.download(remote, handle)
            except PartMissing as exc:
                raise PartMissing(f"{label} cannot be downloaded ({exc})") from None
            handle.seek(0)
            digest = _sha256(handle)
            if size != part.size or digest != part.sha256:
                raise IntegrityError(
                    f"{label} does not match the manifest (expected {part.size} bytes, SHA-256 "
                    f"{part.sha256[:16]}...; got {size} bytes, {digest[:16]}...): the part was "
                    "altered or corrupted; nothing was restored"
                )
            handle.seek(0)
            while block := handle.read(BLOCK):
                whole.update(block)
                total += len(block)
                for plain in decryptor.update(block):
                    out = decompressor.decompress(plain)
                    raw += len(out)
                    sink(out)
    if total != manifest.size or whole.hexdigest() != manifest.sha256:
        raise IntegrityError(f"backup {manifest.id}: the whole stream's SHA-256 does not match")
    out = decompressor.decompress(decryptor.finish()) + decompressor.flush()
    if not decompressor.eof:
        raise IntegrityError(f"backup {manifest.id}: the compressed stream is cut short")
    raw += len(out)
    sink(out)
    return raw


def _sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := handle.read(BLOCK):
        digest.update(block)
    return digest.hexdigest()


def restore(
    ctx: RegionContext,
    bot: BotApi,
    manifest: Manifest,
    target: str,
    *,
    work_dir: Path,
    force: bool = False,
) -> RestoreResult:
    """pg_restore ``manifest``'s backup into ``target`` (created if missing), all or nothing."""
    started = time.monotonic()
    target = libpq_url(target)
    if postgres.same_database(target, ctx.database_url) and not force:
        raise RestoreRefused(
            f"the target is region {ctx.name!r}'s own database ({postgres.masked(target)}): "
            "restore into another database, or pass --force to overwrite the source"
        )
    postgres.create_database(target, exist_ok=True)
    with tempfile.TemporaryFile(mode="w+", dir=work_dir) as err:
        command = [
            postgres.find_binary("pg_restore"),
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-password",
            f"--dbname={target}",
        ]
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err
        )
        assert proc.stdin is not None
        stdin = proc.stdin

        def sink(data: bytes) -> None:
            # a broken pipe means pg_restore stopped: its exit code and stderr say why
            if data:
                with contextlib.suppress(BrokenPipeError):
                    stdin.write(data)

        try:
            raw = stream_backup(bot, manifest, work_dir, sink)
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
            code = proc.wait()
        except BaseException:
            proc.kill()  # before EOF: the single transaction never commits
            proc.wait()
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
            raise
        if code != 0:
            err.seek(0)
            postgres.raise_dump_failure("pg_restore", code, err.read())
    result = RestoreResult(
        manifest.id,
        ctx.name,
        target,
        len(manifest.parts),
        manifest.size,
        raw,
        time.monotonic() - started,
    )
    log.info("restore complete", **result.as_dict())
    return result


def compare_tables(
    expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]
) -> list[str]:
    """Every difference between the manifest's table stats and the restored ones."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            problems.append(f"{table}: missing after restore")
        elif table not in expected:
            problems.append(f"{table}: restored but not in the manifest")
        else:
            want, got = expected[table], actual[table]
            if want.get("rows") != got.get("rows"):
                problems.append(f"{table}: {got.get('rows')} rows, manifest says {want['rows']}")
            elif want.get("checksum") != got.get("checksum"):
                problems.append(f"{table}: same row count but different content (checksum)")
    return problems


def verify(
    ctx: RegionContext,
    bot: BotApi,
    manifest: Manifest,
    *,
    work_dir: Path,
    scratch_url: str | None = None,
    keep: bool = False,
) -> VerifyResult:
    """Restore drill: restore into a scratch database and compare every table with the manifest."""
    started = time.monotonic()
    scratch = scratch_url or postgres.with_database(
        ctx.database_url, f"skylift_verify_{manifest.id.replace('-', '_').lower()}"[:63]
    )
    if postgres.same_database(scratch, ctx.database_url):
        raise RestoreRefused("the scratch database must not be the region's own database")
    postgres.create_database(scratch, exist_ok=False)
    try:
        restore(ctx, bot, manifest, scratch, work_dir=work_dir)
        actual = postgres.database_stats(scratch)
    finally:
        if not keep:
            postgres.drop_database(scratch)
    mismatches = compare_tables(dict(manifest.tables), actual)
    rows = sum(int(t.get("rows", 0)) for t in actual.values())
    return VerifyResult(
        manifest.id,
        ctx.name,
        not mismatches,
        len(actual),
        rows,
        mismatches,
        time.monotonic() - started,
    )
