"""PostgreSQL at the edges of a backup: pg_dump/pg_restore binaries, snapshots, table stats.

Table statistics (row count and an order-independent checksum per table) are
taken inside the very snapshot pg_dump dumps (``--snapshot``), so a restore
drill can compare the restored tables with the numbers of the dumped state,
not of a moment later.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from skylift.backup.errors import BackupError, DumpFailed
from skylift.config.regions import libpq_url

_STATS_SQL = "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} AS t"
_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2
"""


def find_binary(name: str) -> str:
    """``pg_dump``/``pg_restore``: $SKYLIFT_PG_BIN, newest /usr/lib/postgresql/*/bin, PATH."""
    candidates: list[Path] = []
    if os.environ.get("SKYLIFT_PG_BIN"):
        candidates.append(Path(os.environ["SKYLIFT_PG_BIN"]))
    installed = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        installed, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    for directory in candidates:
        if (directory / name).is_file():
            return str(directory / name)
    found = shutil.which(name)
    if found:
        return found
    raise BackupError(
        f"{name} not found: install the PostgreSQL client (apt-get install postgresql-client) "
        "or set SKYLIFT_PG_BIN to its directory"
    )


class Psql:
    """A ``psql`` session on a pipe: the one PostgreSQL client backups use.

    Running the real client keeps the backup process free of a driver (and
    its memory), and lets a transaction stay open while pg_dump runs.
    Rows come back as tuples of text; errors raise :class:`BackupError`.
    """

    _SEP = "\x1f"

    def __init__(self, url: str) -> None:
        self._url = url
        self._proc = subprocess.Popen(
            [
                find_binary("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                self._SEP,
                "-v",
                "ON_ERROR_STOP=1",
                "--no-password",
                f"--dbname={url}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._marker = 0

    def query(self, sql_text: str) -> list[tuple[str, ...]]:
        """Run one statement; its rows (empty for commands)."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        self._marker += 1
        marker = f"__skylift_done_{self._marker}__"
        try:
            proc.stdin.write(f"{sql_text.strip().rstrip(';')};\n\\echo {marker}\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        rows: list[tuple[str, ...]] = []
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line == marker:
                return rows
            if line:
                rows.append(tuple(line.split(self._SEP)))
        raise BackupError(f"psql on {masked(self._url)} failed: {self._error()}")

    def _error(self) -> str:
        self._proc.wait(timeout=30)
        stderr = self._proc.stderr.read() if self._proc.stderr else ""
        return masked(" ".join(stderr.strip().splitlines()[-2:])) or f"exit {self._proc.returncode}"

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write("\\q\n")
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Psql:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Snapshot:
    """An exported snapshot plus the stats of every table in it.

    ``release`` ends the exporting transaction (and its psql) early: once
    pg_dump has imported the snapshot, its own transaction keeps it.
    """

    name: str
    server_version: str
    tables: dict[str, dict[str, Any]]
    release: Callable[[], None] = lambda: None


def table_stats(session: Psql) -> dict[str, dict[str, Any]]:
    """``{"schema.table": {"rows": n, "checksum": "..."}}`` in the session's snapshot."""
    stats: dict[str, dict[str, Any]] = {}
    for schema, table in session.query(_TABLES_SQL):
        name = f"{quote_ident(schema)}.{quote_ident(table)}"
        ((rows, checksum),) = session.query(_STATS_SQL.format(name))
        stats[f"{schema}.{table}"] = {"rows": int(rows), "checksum": checksum}
    return stats


@contextlib.contextmanager
def exported_snapshot(url: str) -> Iterator[Snapshot]:
    """Hold a REPEATABLE READ transaction open while pg_dump uses its snapshot."""
    with Psql(url) as session:
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        ((name,),) = session.query("SELECT pg_export_snapshot()")
        ((version,),) = session.query("SHOW server_version")
        stats = table_stats(session)
        yield Snapshot(name, version, stats, release=session.close)


def database_stats(url: str) -> dict[str, dict[str, Any]]:
    with Psql(libpq_url(url)) as session:
        return table_stats(session)


def with_database(url: str, database: str) -> str:
    """The same server and user, another database."""
    parts = urlsplit(libpq_url(url))
    return urlunsplit(parts._replace(path=f"/{database}"))


def same_database(a: str, b: str) -> bool:
    """Do two URLs name the same database on the same server (loopback spellings equal)?"""

    def key(url: str) -> tuple[str, int, str]:
        parts = urlsplit(libpq_url(url))
        host = (parts.hostname or "localhost").lower()
        if host in ("127.0.0.1", "::1", "localhost", ""):
            host = "localhost"
        return host, parts.port or 5432, parts.path.strip("/")

    return key(a) == key(b)


def create_database(url: str, *, exist_ok: bool) -> bool:
    """Create the database ``url`` names (via the server's ``postgres`` db); True if created."""
    name = urlsplit(libpq_url(url)).path.strip("/")
    with Psql(with_database(url, "postgres")) as session:
        query = f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}"  # noqa: S608
        exists = session.query(query)
        if exists:
            if exist_ok:
                return False
            raise BackupError(f"database {name!r} already exists on {masked(url)}")
        session.query(f"CREATE DATABASE {quote_ident(name)}")
        return True


def drop_database(url: str) -> None:
    name = urlsplit(libpq_url(url)).path.strip("/")
    with Psql(with_database(url, "postgres")) as session:
        session.query(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def pin_archive_time(head: bytes) -> bytes:
    """Replace the dump time in a custom-format archive header with a fixed one.

    The header's creation time is the only byte range in which two dumps of
    an unchanged database differ; fixing it makes a rerun reproduce the same
    parts so already uploaded ones are reused (the real time is in the
    manifest). Headers of unknown layout are returned unchanged.
    """
    if len(head) < 60 or not head.startswith(b"PGDMP"):
        return head
    major, minor, int_size = head[5], head[6], head[8]
    if major != 1 or int_size != 4:
        return head
    start = 11 + (5 if minor < 15 else 1)  # 1.15 (PG 16) stores compression as one byte
    fixed = b"".join(b"\x00" + v.to_bytes(4, "little") for v in (0, 0, 0, 1, 0, 100, 0))
    return head[:start] + fixed + head[start + len(fixed) :]


def raise_dump_failure(tool: str, code: int, stderr: str) -> None:
    tail = masked(" ".join(stderr.strip().splitlines()[-3:])) or "no error output"
    raise DumpFailed(f"{tool} exited with code {code}: {tail}")
