"""Parse the runtime API's ``show stat`` CSV and ``show servers state`` dump.

Pure functions: the socket client hands text in, typed rows come out.
"""

from __future__ import annotations

import csv
import enum
import io
from dataclasses import dataclass


class ServerState(enum.StrEnum):
    """A server's state folded to what the controller acts on."""

    UP = "up"
    DOWN = "down"
    MAINT = "maint"
    DRAIN = "drain"
    NOLB = "nolb"  # up but refusing new traffic (e.g. http-check disable-on-404)


def fold_status(status: str) -> ServerState:
    """``UP``, ``UP 1/3`` (failing), ``DOWN 1/2`` (recovering), ``MAINT (via x)``, ``no check``."""
    word = status.strip().split(" ", 1)[0].upper()
    if word == "UP" or status.strip().lower() == "no check":
        return ServerState.UP
    if word == "MAINT":
        return ServerState.MAINT
    if word == "DRAIN":
        return ServerState.DRAIN
    if word == "NOLB":
        return ServerState.NOLB
    return ServerState.DOWN


def _int(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else None


@dataclass(frozen=True, slots=True)
class StatRow:
    """One server line of ``show stat``; counters absent from the CSV are None."""

    proxy: str
    name: str
    status: str  # raw, e.g. "UP 1/3"
    state: ServerState
    weight: int
    scur: int  # current sessions
    qcur: int  # queued requests
    rate: int  # sessions per second, last second
    req_rate: int | None  # requests per second (frontends only in 2.6)
    req_tot: int | None
    stot: int  # sessions since start
    check_status: str  # e.g. L7OK, L4CON, L7STS ("* " in-progress mark removed)
    check_code: int | None
    check_duration: int | None  # ms
    check_desc: str
    last_chk: str
    lastchg: int | None  # seconds since last state change
    addr: str
    qtime: int | None  # ms, average of last 1024 requests
    ctime: int | None
    rtime: int | None
    ttime: int | None


def parse_stat_csv(text: str) -> list[StatRow]:
    """Parse ``show stat`` CSV; keeps only server rows (not FRONTEND/BACKEND aggregates)."""
    text = text.lstrip()
    if text.startswith("# "):
        text = text[2:]
    rows: list[StatRow] = []
    for rec in csv.DictReader(io.StringIO(text)):
        name = rec.get("svname") or ""
        if not name or name in ("FRONTEND", "BACKEND") or not rec.get("pxname"):
            continue

        def num(key: str, rec: dict[str, str] = rec) -> int | None:
            return _int(rec.get(key) or "")

        status = rec.get("status") or ""
        rows.append(
            StatRow(
                proxy=rec["pxname"],
                name=name,
                status=status,
                state=fold_status(status),
                weight=num("weight") or 0,
                scur=num("scur") or 0,
                qcur=num("qcur") or 0,
                rate=num("rate") or 0,
                req_rate=num("req_rate"),
                req_tot=num("req_tot"),
                stot=num("stot") or 0,
                check_status=(rec.get("check_status") or "").removeprefix("* ").strip(),
                check_code=num("check_code"),
                check_duration=num("check_duration"),
                check_desc=rec.get("check_desc") or "",
                last_chk=rec.get("last_chk") or "",
                lastchg=num("lastchg"),
                addr=rec.get("addr") or "",
                qtime=num("qtime"),
                ctime=num("ctime"),
                rtime=num("rtime"),
                ttime=num("ttime"),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class ServerStateRow:
    """One line of ``show servers state`` (format version 1), the fields skylift uses."""

    backend: str
    name: str
    addr: str
    port: int
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int  # bit flags; 0x01 forced maint, 0x08 forced drain ...
    weight: int

    @property
    def address(self) -> str:
        return f"{self.addr}:{self.port}"


def parse_servers_state(text: str) -> list[ServerStateRow]:
    """Parse the dump ``server-state-file`` also uses; raise ValueError on an unknown version."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    if lines[0].strip() != "1":
        raise ValueError(f"unknown servers state format version {lines[0]!r}")
    header: list[str] = []
    out: list[ServerStateRow] = []
    for line in lines[1:]:
        if line.startswith("#"):
            header = line[1:].split()
            continue
        rec = dict(zip(header, line.split(), strict=False))
        out.append(
            ServerStateRow(
                backend=rec["be_name"],
                name=rec["srv_name"],
                addr=rec["srv_addr"],
                port=int(rec["srv_port"]),
                op_state=int(rec["srv_op_state"]),
                admin_state=int(rec["srv_admin_state"]),
                weight=int(rec["srv_uweight"]),
            )
        )
    return out
