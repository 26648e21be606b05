"""``backup run``: pg_dump -> zstd -> AES-GCM chunks -> parts -> Telegram -> manifest.

One pass over pg_dump's output with bounded memory: 1 MiB reads, one
encryption chunk, and at most two parts on disk (one being written, one
being uploaded by a worker thread). No file ever holds the whole dump.

A backup counts only when pg_dump exited 0, every part was acknowledged and
the manifest was acknowledged after them. Each acknowledged part is recorded
at once; a rerun after a failure reuses the interrupted backup's data key, so
unchanged data reproduces the same parts, and a part whose SHA-256 matches
the one already acknowledged is not sent again.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import structlog
import zstandard

from skylift.backup import postgres, retention
from skylift.backup.context import RegionContext
from skylift.backup.crypto import Encryptor
from skylift.backup.errors import BackupError, IntegrityError
from skylift.backup.index import BackupIndex, BackupRecord
from skylift.backup.keys import RegionKey
from skylift.backup.manifest import CatalogEntry, Manifest, Part
from skylift.backup.telegram import BotApi
from skylift.config.regions import Retention

log = structlog.get_logger("skylift.backup")
READ_SIZE = 1024 * 1024
DATA_KEY_PURPOSE = "data-key"


@dataclass(frozen=True)
class RunResult:
    id: str
    region: str
    parts: int
    bytes: int
    raw_bytes: int
    sha256: str
    reused_parts: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "region": self.region,
            "parts": self.parts,
            "bytes": self.bytes,
            "raw_bytes": self.raw_bytes,
            "sha256": self.sha256,
            "reused_parts": self.reused_parts,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.raw_bytes / 1e6 / self.seconds, 2) if self.seconds else None,
        }


def new_backup_id(region: str, now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{region}-{stamp}-{secrets.token_hex(2)}"


def wrap_data_key(key: RegionKey, backup_id: str, data_key: bytes, salt: bytes) -> str:
    payload = json.dumps(
        {"key": base64.b64encode(data_key).decode(), "salt": base64.b64encode(salt).decode()}
    ).encode()
    return base64.b64encode(key.seal(DATA_KEY_PURPOSE, backup_id, payload)).decode()


def unwrap_data_key(key: RegionKey, backup_id: str, wrapped: str) -> tuple[bytes, bytes]:
    name, payload = key.open(
        DATA_KEY_PURPOSE, base64.b64decode(wrapped), f"the data key of backup {backup_id}"
    )
    if name != backup_id:
        raise IntegrityError(f"the index holds backup {name}'s data key under {backup_id}")
    data = json.loads(payload)
    return base64.b64decode(data["key"]), base64.b64decode(data["salt"])


class _PartWriter:
    """Cuts the encrypted stream into part files of exactly ``size`` bytes (the last: less)."""

    def __init__(self, work_dir: Path, size: int, emit: Callable[[int, Path, int, str], None]):
        self._dir, self._size, self._emit = work_dir, size, emit
        self._index = 0
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._written = 0
        self._hash = hashlib.sha256()
        self.total = 0
        self.whole = hashlib.sha256()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._file is None:
                self._path = self._dir / f"part-{self._index:05d}"
                self._file = self._path.open("wb")
            take = min(len(view), self._size - self._written)
            chunk = view[:take]
            self._file.write(chunk)
            self._hash.update(chunk)
            self.whole.update(chunk)
            self._written += take
            self.total += take
            view = view[take:]
            if self._written == self._size:
                self._close()

    def finish(self) -> None:
        if self._file is not None:
            self._close()

    def _close(self) -> None:
        assert self._file is not None and self._path is not None
        self._file.close()
        self._emit(self._index, self._path, self._written, self._hash.hexdigest())
        self._index += 1
        self._file, self._written, self._hash = None, 0, hashlib.sha256()


class _Uploader:
    """Sends parts from a worker thread, one at a time, while the next part is written."""

    def __init__(
        self,
        ctx: RegionContext,
        bot: BotApi,
        index: BackupIndex,
        backup_id: str,
        acknowledged: list[dict[str, Any]],
    ) -> None:
        self._ctx, self._bot, self._index, self._id = ctx, bot, index, backup_id
        self._previous = acknowledged  # from an interrupted run of the same backup
        self.parts: list[Part] = []
        self.reused = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-upload")
        self._pending: Future[None] | None = None

    def submit(self, number: int, path: Path, size: int, sha256: str) -> None:
        self.wait()  # at most one upload in flight: bounded disk and memory
        self._pending = self._pool.submit(self._send, number, path, size, sha256)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _send(self, number: int, path: Path, size: int, sha256: str) -> None:
        try:
            old = self._previous[number] if number < len(self._previous) else None
            if old is not None and old["sha256"] == sha256 and old["size"] == size:
                self.parts.append(Part.model_validate(old))
                self.reused += 1
                log.info("part already acknowledged, reused", backup=self._id, part=number)
                return
            self._previous = self._previous[:number]  # the stream changed: later ones are stale
            sent = self._bot.send_document(
                self._ctx.chat_id,
                path,
                filename=f"{self._id}.part{number:04d}",
                caption=f"skylift backup {self._id} part {number + 1}",
            )
            if sent.file_size is not None and sent.file_size != size:
                raise BackupError(
                    f"Telegram stored {sent.file_size} bytes for part {number + 1}, "
                    f"{size} were sent: the upload was not acknowledged intact"
                )
            part = Part(
                index=number,
                size=size,
                sha256=sha256,
                file_id=sent.file_id,
                message_id=sent.message_id,
                sent_at=time.time(),
            )
            self.parts.append(part)
            self._index.set_parts(self._id, [p.model_dump() for p in self.parts])
            log.info("part acknowledged", backup=self._id, part=number, bytes=size)
        finally:
            path.unlink(missing_ok=True)


def _read_blocks(stream: IO[bytes]) -> Iterator[bytes]:
    first = True
    while block := stream.read(READ_SIZE):
        if first:
            block, first = postgres.pin_archive_time(block), False
        yield block


@contextlib.contextmanager
def _region_lock(work_dir: Path, region: str) -> Iterator[None]:
    """One backup per region at a time (two runs would resume the same backup)."""
    path = work_dir / f"{region}.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BackupError(
                f"a backup of region {region!r} is already running ({holder}): wait for it "
                "to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield


def run_backup(
    ctx: RegionContext,
    index: BackupIndex,
    bot: BotApi,
    *,
    work_dir: Path,
    fresh: bool = False,
    prune: bool = True,
) -> RunResult:
    """Dump, encrypt and upload one backup of ``ctx``'s database; resume an interrupted one.

    With ``prune``, the manifest's catalog leaves out the backups that retention
    will expire right after this one completes.
    """
    with _region_lock(work_dir, ctx.name):
        return _run_backup(
            ctx, index, bot, work_dir, fresh, ctx.backup.retention if prune else None
        )


def _run_backup(
    ctx: RegionContext,
    index: BackupIndex,
    bot: BotApi,
    work_dir: Path,
    fresh: bool,
    retained: Retention | None,
) -> RunResult:
    started = time.monotonic()
    key = ctx.key()
    prior: BackupRecord | None = None if fresh else index.unfinished(ctx.name, ctx.database)
    if prior is not None and prior.wrapped_key is not None:
        backup_id = prior.id
        data_key, salt = unwrap_data_key(key, backup_id, prior.wrapped_key)
        index.resume(backup_id)
        log.info("resuming interrupted backup", backup=backup_id, acknowledged=len(prior.parts))
    else:
        backup_id = new_backup_id(ctx.name, time.time())
        data_key, salt = secrets.token_bytes(32), secrets.token_bytes(16)
        index.start(
            backup_id, ctx.name, ctx.database, wrap_data_key(key, backup_id, data_key, salt)
        )
    created = time.time()
    uploader = _Uploader(ctx, bot, index, backup_id, prior.parts if prior else [])
    try:
        with tempfile.TemporaryDirectory(prefix="skylift-backup-", dir=work_dir) as tmp:
            raw, writer, snapshot = _dump(ctx, Path(tmp), data_key, salt, uploader)
            uploader.wait()
            manifest = Manifest(
                id=backup_id,
                region=ctx.name,
                database=ctx.database,
                server_version=snapshot.server_version,
                created_at=created,
                finished_at=time.time(),
                data_key=base64.b64encode(data_key).decode(),
                raw_bytes=raw,
                size=writer.total,
                sha256=writer.whole.hexdigest(),
                parts=sorted(uploader.parts, key=lambda p: p.index),
                tables=snapshot.tables,
                catalog=_catalog(index, ctx.name, backup_id, created, retained),
            )
            info = _send_manifest(ctx, bot, key, manifest, Path(tmp))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            index.fail(backup_id, str(exc) or type(exc).__name__)
        raise
    finally:
        uploader.close()
    index.complete(
        backup_id,
        manifest=info,
        sha256=manifest.sha256,
        size=manifest.size,
        raw_bytes=raw,
        tables=snapshot.tables,
    )
    result = RunResult(
        backup_id,
        ctx.name,
        len(manifest.parts),
        manifest.size,
        raw,
        manifest.sha256,
        uploader.reused,
        time.monotonic() - started,
    )
    log.info("backup complete", **result.as_dict())
    return result


def _dump(
    ctx: RegionContext, tmp: Path, data_key: bytes, salt: bytes, uploader: _Uploader
) -> tuple[int, _PartWriter, postgres.Snapshot]:
    """Stream pg_dump through zstd and encryption into parts; fail unless pg_dump exits 0."""
    writer = _PartWriter(tmp, ctx.backup.telegram.part_size, uploader.submit)
    encryptor = Encryptor(data_key, salt)
    compressor = zstandard.ZstdCompressor(level=ctx.backup.compression_level).compressobj()
    raw = 0
    with (
        postgres.exported_snapshot(ctx.database_url) as snapshot,
        (tmp / "pg_dump.err").open("w+") as err,
    ):
        command = [
            postgres.find_binary("pg_dump"),
            "--format=custom",
            "--compress=0",  # zstd compresses the whole stream instead
            f"--snapshot={snapshot.name}",
            "--no-password",
            f"--dbname={ctx.database_url}",
        ]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        try:
            assert proc.stdout is not None
            for block in _read_blocks(proc.stdout):
                if not raw:
                    snapshot.release()  # pg_dump writes only after importing the snapshot
                raw += len(block)
                for chunk in encryptor.update(compressor.compress(block)):
                    writer.write(chunk)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if code != 0:
            err.seek(0)
            postgres.raise_dump_failure("pg_dump", code, err.read())
    for chunk in encryptor.update(compressor.flush()) + encryptor.finish():
        writer.write(chunk)
    writer.finish()
    return raw, writer, snapshot


def _catalog(
    index: BackupIndex, region: str, backup_id: str, created: float, policy: Retention | None
) -> list[CatalogEntry]:
    """The region's other live backups that survive retention once this one completes."""
    live = [r for r in index.list(region, status="complete") if r.manifest]
    keep = (
        retention.plan([(r.id, r.created_at) for r in live] + [(backup_id, created)], policy)
        if policy is not None
        else {r.id: ["no retention"] for r in live}
    )
    return [
        CatalogEntry(
            id=record.id,
            created_at=record.created_at,
            manifest_file_id=str(record.manifest["file_id"]),
            manifest_message_id=int(record.manifest["message_id"]),
        )
        for record in live
        if record.manifest and keep[record.id]
    ]


def _send_manifest(
    ctx: RegionContext, bot: BotApi, key: RegionKey, manifest: Manifest, tmp: Path
) -> dict[str, Any]:
    sealed = manifest.seal(key)
    path = tmp / "manifest"
    path.write_bytes(sealed)
    sent = bot.send_document(
        ctx.chat_id,
        path,
        filename=f"{manifest.id}.manifest",
        caption=f"skylift backup {manifest.id} manifest ({len(manifest.parts)} parts)",
    )
    try:
        bot.pin_message(ctx.chat_id, sent.message_id)  # how a restore finds it from Telegram alone
    except BackupError as exc:
        log.warning(
            "could not pin the manifest; restore from Telegram alone will not find it",
            backup=manifest.id,
            reason=str(exc),
        )
    return {
        "file_id": sent.file_id,
        "message_id": sent.message_id,
        "sha256": hashlib.sha256(sealed).hexdigest(),
        "size": len(sealed),
        "sent_at": time.time(),
    }
