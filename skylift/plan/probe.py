"""What ``skylift plan`` detects from the running deployment (the I/O half of the plan).

Each prerequisite is looked at, not declared: the controller's status (ready
replicas, health-checked by HAProxy, autoscaling), the replicas' processes
(environment variable *names* and open TCP connections, never values), the
backup index, and the load history in the store. What skylift cannot see
(another app's sessions, a container's environment) is ``None``: unknown.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from skylift.config import LoadedConfig
from skylift.plan.growth import DAY, Growth, daily_peaks, fit_growth
from skylift.plan.roadmap import Facts, Prerequisite

REDIS_PORT = 6379
PG_PORTS = {5432: "PostgreSQL", 6432: "PgBouncer"}
BACKUP_FRESH = 2 * DAY
PEAK_WINDOW = 7 * DAY


@dataclass(frozen=True)
class Seen:
    """A replica process's environment names and remote ports (None: could not look)."""

    env_names: set[str] | None
    remote_ports: list[int] | None


def look_at(pids: Iterable[int]) -> list[Seen]:
    """Environment names and established remote ports of each replica (and children)."""
    out: list[Seen] = []
    for pid in pids:
        names: set[str] | None = None
        ports: list[int] | None = None
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
            names = set()
            ports = []
            for p in procs:
                names |= set(p.environ())
                ports += [
                    c.raddr.port
                    for c in p.net_connections(kind="tcp")
                    if c.raddr and c.status == psutil.CONN_ESTABLISHED
                ]
        out.append(Seen(names, ports))
    return out


def replica_prerequisites(seen: list[Seen]) -> list[Prerequisite]:
    """Redis sessions and a pooled database, from what the replicas hold: pure."""
    visible = [s for s in seen if s.env_names is not None and s.remote_ports is not None]
    if not visible:
        why = "no replica process visible to skylift (container backend, or none running)"
        return [
            Prerequisite("Redis sessions", None, why),
            Prerequisite("pooled database", None, why),
        ]
    redis_env = sorted({n for s in visible for n in s.env_names or () if "REDIS" in n.upper()})
    redis_conns = sum(p == REDIS_PORT for s in visible for p in s.remote_ports or ())
    if redis_conns or redis_env:
        redis = Prerequisite(
            "Redis sessions",
            True,
            f"{redis_conns} open connection(s) to port {REDIS_PORT}"
            + (f"; replica environment names {', '.join(redis_env)}" if redis_env else ""),
        )
    else:
        redis = Prerequisite(
            "Redis sessions",
            None,
            "no Redis connection or REDIS* variable in the replicas: sessions may live "
            "elsewhere (skylift cannot see where)",
        )
    pg = {
        name: sum(p == port for s in visible for p in s.remote_ports or ())
        for port, name in PG_PORTS.items()
    }
    if pg["PgBouncer"]:
        pool = Prerequisite(
            "pooled database", True, f"{pg['PgBouncer']} connection(s) to PgBouncer (6432)"
        )
    elif pg["PostgreSQL"]:
        pool = Prerequisite(
            "pooled database",
            True,
            f"{pg['PostgreSQL']} PostgreSQL connection(s) held open by {len(visible)} replica(s) "
            "between requests (a pool)",
        )
    else:
        pool = Prerequisite("pooled database", None, "no open database connection in the replicas")
    return [redis, pool]


def detect(loaded: LoadedConfig, service: str, status: dict[str, Any] | None) -> Facts:
    """Facts of the running deployment; ``status`` None when no controller answers."""
    regions = len(loaded.config.edged_regions)
    region_pre = Prerequisite(
        "regions",
        regions > 1,
        f"{regions} region(s) with an edge in {loaded.path.name}"
        if regions
        else "one host, no region with an edge",
    )
    backups = _backups(loaded)
    if status is None:
        why = "no controller answers: start it with `skylift up`"
        unknown = [
            Prerequisite(n, None, why)
            for n in (
                "replicas > 1",
                "health checks",
                "Redis sessions",
                "pooled database",
                "autoscaling",
            )
        ]
        return Facts(0, regions, False, [*unknown, backups, region_pre])
    svc = status
    ready = [r for r in svc["replicas"] if r["state"] == "ready"]
    spec = loaded.config.services[service]
    auto = svc.get("autoscale")
    autoscaling = bool(auto) and not (auto or {}).get("paused", False)
    prereqs = [
        Prerequisite("replicas > 1", len(ready) > 1, f"{len(ready)} ready replica(s) in HAProxy"),
        Prerequisite(
            "health checks",
            bool(ready),
            f"HAProxy checks GET {spec.health.path} every {spec.health.interval:g}s: "
            f"{len(ready)} of {len(svc['replicas'])} replica(s) pass",
        ),
        *replica_prerequisites(look_at(r["pid"] for r in ready if r.get("pid"))),
        backups,
        region_pre,
        Prerequisite(
            "autoscaling",
            autoscaling,
            "the controller autoscales this service"
            if autoscaling
            else ("autoscaling paused" if auto else "no autoscale policy running"),
        ),
    ]
    return Facts(len(ready), regions, autoscaling, prereqs)


def _backups(loaded: LoadedConfig) -> Prerequisite:
    """A completed backup in the last 48 h, from the backup index in the store."""
    from skylift.backup.index import LIVE, BackupIndex

    try:
        with BackupIndex.open(loaded.store_url, loaded.state_dir, migrate=False) as index:
            done = index.list(status=LIVE)
    except Exception as exc:  # any store error: unknown, and say which
        return Prerequisite("backups", None, f"backup index unreadable: {exc}")
    if not done:
        return Prerequisite("backups", False, "no completed backup in the backup index")
    newest = max((b.finished_at or b.created_at) for b in done)
    age = time.time() - newest
    return Prerequisite(
        "backups",
        age <= BACKUP_FRESH,
        f"newest completed backup {age / 3600:.1f} h old ({len(done)} kept)",
    )


@dataclass(frozen=True)
class Traffic:
    times: list[float]
    values: list[float]
    peaks: list[tuple[float, float]]
    peak: float | None
    growth: Growth | None


def traffic(loaded: LoadedConfig, service: str, metric: str, now: float) -> Traffic:
    """Stored history of ``metric`` for ``service``: daily peaks, the current peak (the
    highest bucket of the last 7 days) and the growth fitted to daily peaks."""
    from skylift.store import Store

    with Store.open(loaded.store_url, state_dir=loaded.state_dir) as store:
        buckets = store.history.load(service, metric)
    times = [b.start for b in buckets]
    values = [b.mean for b in buckets]
    return summarize(times, values, now)


def hourly(times: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    """Mean per clock hour: the store keeps 1-minute buckets for 8 days and 1-hour
    buckets before, and daily peaks must be taken at one resolution or the recent
    (finer, spikier) days would read as growth."""
    sums: dict[float, list[float]] = {}
    for t, v in zip(times, values, strict=True):
        sums.setdefault(t // 3600 * 3600, []).append(v)
    hours = sorted(sums)
    return hours, [sum(sums[h]) / len(sums[h]) for h in hours]


def summarize(times: list[float], values: list[float], now: float) -> Traffic:
    """Pure: daily peaks of hourly means, growth fitted to them, and the current peak
    (the highest bucket of the last 7 days at the store's finest resolution)."""
    peaks = daily_peaks(*hourly(times, values))
    recent = [v for t, v in zip(times, values, strict=True) if t >= now - PEAK_WINDOW]
    return Traffic(times, values, peaks, max(recent) if recent else None, fit_growth(peaks))
