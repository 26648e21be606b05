"""Copy a replica's output into its log file, rotated by size: a process of its own.

Why a process per replica: replicas outlive the controller (that is how a
controller restart drops no traffic), so whatever holds the read end of a
replica's stdout must outlive it too; a pipe into the controller would break
on its first restart. A replica writing its file directly cannot be rotated
safely (copy-truncate loses lines and only bounds the size as often as
someone checks). This writer is the only writer of the file, so the bound is
exact: the live file never exceeds ``--max-bytes`` and at most ``--backups``
rotated files of that size exist beside it.

It is started by the process backend in its own session before the replica
and reads the pipe that is the replica's stdout and stderr. It ignores
SIGTERM/SIGINT/SIGHUP (a stop must not lose the replica's last words) and
exits when the last writer closes the pipe, i.e. when the replica and every
child it spawned are gone. A write error (disk full) drops that output and
keeps reading: dying would break the replica's stdout.

Only the standard library, so it runs as ``python -I -S logwriter.py`` and
costs a few MB, whatever is installed around it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

CHUNK = 64 * 1024


class RotatingFile:
    """An append-only file that is rotated (``.1``, ``.2``, ...) before it outgrows its limit."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max(1, max_bytes)
        self.backups = max(1, backups)
        self.dropped = 0  # bytes lost to write errors
        self._fd = self._open()
        self.size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating first where it would cross the limit (at a line end
        when the part that fits has one)."""
        view = memoryview(data)
        while view:
            room = self.max_bytes - self.size
            if len(view) <= room:
                self._append(view)
                return
            cut = bytes(view[:room]).rfind(b"\n") + 1 if room > 0 else 0
            if cut == 0 and self.size == 0:
                cut = room  # one line longer than the limit: split it
            if cut:
                self._append(view[:cut])
                view = view[cut:]
            self.rotate()

    def _append(self, data: memoryview) -> None:
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
                self.size += written
        except OSError:
            self.dropped += len(data)
            self.size += len(data)  # count it: the limit keeps holding if writes resume

    def rotate(self) -> None:
        """``log`` -> ``log.1`` -> ``log.2`` ...; the oldest beyond ``backups`` is replaced.

        ``log`` never disappears, not even for an instant (a reader polling it
        never finds it missing): the old file is hard-linked to ``log.1`` and a
        fresh one renamed over ``log``; renames are atomic.
        """
        path = self.path
        try:
            for number in range(self.backups - 1, 0, -1):
                older = f"{path}.{number}"
                if os.path.exists(older):
                    os.replace(older, f"{path}.{number + 1}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}.1.tmp")
            os.link(path, f"{path}.1.tmp")
            os.replace(f"{path}.1.tmp", f"{path}.1")
            fresh = os.open(
                f"{path}.tmp",
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                0o640,
            )
            os.replace(f"{path}.tmp", path)
        except OSError:  # cannot rotate (no hard links, read-only): truncate, the bound holds
            try:
                fresh = self._open()
                os.ftruncate(fresh, 0)
            except OSError:
                fresh = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        os.close(self._fd)
        self._fd = fresh
        self.size = 0

    def close(self) -> None:
        os.close(self._fd)


def pump(source: int, sink: RotatingFile) -> None:
    """Copy ``source`` into ``sink`` until end of file."""
    while True:
        try:
            data = os.read(source, CHUNK)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not data:
            return
        sink.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path")
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--backups", type=int, default=1)
    parser.add_argument("--header", default="")
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sink = RotatingFile(args.path, args.max_bytes, args.backups)
    if args.header:
        sink.write(args.header.encode() + b"\n")
    try:
        pump(sys.stdin.fileno(), sink)
    finally:
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
