"""A service: backend, health check, back-off, resources, connection budget, autoscale."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skylift.config.base import ENV_NAME, EngineMetric, Listen, Model, PortRange, _parse_listen
from skylift.config.docker import DockerBackend
from skylift.config.kubernetes import KubernetesBackend, advisor_problem
from skylift.config.swarm import SwarmBackend
from skylift.engine import ScalingPolicy
from skylift.metrics.resources import Bytes, Resources
from skylift.units import Duration


class ProcessBackend(Model):
    """Replicas are local processes (the embedded default)."""

    kind: Literal["process"] = "process"
    command: str = Field(
        description="command line; '{port}' is replaced by the replica's port, "
        "'{replica}' by its id"
    )
    ports: PortRange = PortRange()
    env: dict[str, str] = Field(
        default_factory=dict, description="variables set in each replica's environment"
    )
    env_file: str | None = Field(
        None,
        description="dotenv file (relative to the config) whose variables each replica gets, "
        "read at each start; `env` wins over it",
    )
    inherit_env: list[str] = Field(
        default_factory=list,
        description="names of the controller's variables a replica may inherit; besides "
        "these it gets only PATH, HOME, USER, LOGNAME, SHELL, LANG, LC_*, TZ, TMPDIR",
    )
    workdir: str | None = Field(None, description="working directory (relative to the config)")
    log_max_bytes: Bytes = Field(
        10 * 1024 * 1024,
        description="a replica's log is rotated when it would grow past this size, e.g. 10Mi",
    )
    log_backups: int = Field(
        1, ge=1, le=20, description="rotated logs kept per replica (<replica>.log.1, ...)"
    )
    keep_exited_logs: int = Field(
        5,
        ge=0,
        le=1000,
        description="logs kept of replicas that exited on their own (newest first), for "
        "diagnosis; a replica skylift stopped has its logs removed at once",
    )

    @field_validator("inherit_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ENV_NAME.match(name):
                raise ValueError(f"inherit_env: {name!r} is not an environment variable name")
        return value

    @field_validator("command")
    @classmethod
    def _has_port(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command is empty: give the command that starts one replica")
        if "{port}" not in value:
            raise ValueError(
                "command has no '{port}' placeholder: each replica needs its own port, "
                "e.g. 'python app.py --port {port}'"
            )
        return value


_STATUS_TOKEN = re.compile(r"^([1-5][0-9]{0,2})x{0,2}$")
_STATUS_SPAN = re.compile(r"^([1-5][0-9]{2})-([1-5][0-9]{2})$")


class HealthCheck(Model):
    """HTTP health check run by HAProxy (``option httpchk``)."""

    path: str = "/healthz"
    interval: Duration = 2.0
    timeout: Duration = 1.0
    fall: int = Field(3, ge=1, le=100)
    rise: int = Field(2, ge=1, le=100)
    expect_status: str = Field(
        "2xx",
        description=(
            "HTTP statuses that count as healthy, for both skylift's own start-up probe and "
            "HAProxy's check: comma-separated codes or classes, e.g. '2xx', '200', '2xx,301' "
            "('x' is any digit)"
        ),
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ValueError(f"invalid path {value!r}: write an absolute URL path like '/healthz'")
        return value

    @field_validator("expect_status", mode="before")
    @classmethod
    def _statuses(cls, value: Any) -> str:
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, str):
            raise ValueError("write statuses like '2xx', '200,204' or '200-399'")
        tokens = [t.strip().lower() for t in value.split(",")]
        for token in tokens:
            if _status_range(token) is None:
                raise ValueError(
                    f"invalid status {token!r} in {value!r}: write codes (200), classes (2xx, "
                    "20x) or ranges (200-399) between 100 and 599, comma-separated"
                )
        return ",".join(tokens)

    @property
    def status_ranges(self) -> tuple[tuple[int, int], ...]:
        """``expect_status`` as inclusive ranges: ``2xx,301`` -> ``((200, 299), (301, 301))``."""
        return tuple(r for t in self.expect_status.split(",") if (r := _status_range(t)))

    def accepts(self, status: int) -> bool:
        """True when ``status`` is healthy: exactly what HAProxy's ``http-check expect`` accepts."""
        return any(low <= status <= high for low, high in self.status_ranges)


def _status_range(token: str) -> tuple[int, int] | None:
    """``200`` -> (200, 200); ``2xx`` -> (200, 299); ``20x`` -> (200, 209); ``200-399`` as is."""
    if len(token) == 3 and (match := _STATUS_TOKEN.match(token)):
        digits = match.group(1)
        width = 3 - len(digits)
        low, high = int(digits) * 10**width, (int(digits) + 1) * 10**width - 1
    elif match := _STATUS_SPAN.match(token):
        low, high = int(match.group(1)), int(match.group(2))
    else:
        return None
    return (low, high) if 100 <= low <= high <= 599 else None


class Backoff(Model):
    """Restart back-off for a replica that keeps crashing (doubles each time)."""

    initial: Duration = 1.0
    max: Duration = 60.0
    crash_loop_after: int = Field(
        3, ge=1, description="consecutive failed starts before the service shows 'crash-loop'"
    )


class DatabaseBudget(Model):
    """The service's share of its PostgreSQL: each replica's pool opens at most ``pool_size``."""

    max_connections: int = Field(ge=1, description="the database server's max_connections")
    pool_size: int = Field(ge=1, description="connections one replica's pool may open")
    reserve: int = Field(
        5, ge=0, description="connections kept free for admins, migrations, backups, other clients"
    )


@dataclass(frozen=True)
class ConnectionBudget:
    """``max_replicas x pool_size`` must fit in ``max_connections - reserve``."""

    max_replicas: int
    pool_size: int
    max_connections: int
    reserve: int

    @property
    def needed(self) -> int:
        return self.max_replicas * self.pool_size

    @property
    def available(self) -> int:
        return self.max_connections - self.reserve

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    @property
    def replicas_allowed(self) -> int:
        """The most replicas whose pools fit: the ceiling the controller clamps to."""
        return max(0, self.available // self.pool_size)

    def problem(self) -> str:
        fixes = []
        if self.replicas_allowed >= 1:
            fixes.append(f"lower the max replicas to {self.replicas_allowed}")
            pool = max(1, self.available // self.max_replicas)
            fixes.append(f"lower database.pool_size to {pool}")
        fixes.append(f"raise max_connections to {self.needed + self.reserve}")
        return (
            f"connection budget exceeded: max replicas x pool size = {self.needed} exceeds "
            f"max_connections - reserve = {self.available} ({self.max_replicas} x "
            f"{self.pool_size} > {self.max_connections} - {self.reserve}): {' or '.join(fixes)}"
        )


def connection_budget(service: Service) -> ConnectionBudget | None:
    """The service's connection budget (None without a ``database`` block)."""
    if service.database is None:
        return None
    return _budget(service.database, service.replicas, service.autoscale)


def _budget(
    database: DatabaseBudget, replicas: int, autoscale: ScalingPolicy | None
) -> ConnectionBudget:
    return ConnectionBudget(
        max_replicas=autoscale.max if autoscale is not None else replicas,
        pool_size=database.pool_size,
        max_connections=database.max_connections,
        reserve=database.reserve,
    )


class Service(Model):
    """One web service: its replicas, how they are checked and balanced."""

    frontend: Listen = Field(description="where HAProxy listens for this service, HOST:PORT")
    replicas: int = Field(1, ge=1, le=1000, description="desired replicas without autoscaling")
    backend: Annotated[
        ProcessBackend | DockerBackend | SwarmBackend | KubernetesBackend,
        Field(discriminator="kind"),
    ] = Field(
        description="where replicas run: `kind: process` (default), `docker`, `swarm` or "
        "`kubernetes`"
    )
    health: HealthCheck = HealthCheck()
    drain_timeout: Duration = Field(30.0, description="longest wait for sessions to end")
    stop_grace: Duration = Field(10.0, description="SIGTERM to SIGKILL")
    start_timeout: Duration = Field(30.0, description="longest wait for a new replica's health")
    slowstart: Duration = Field(5.0, description="ramp a new replica's weight over this time")
    restart: Backoff = Backoff()
    resources: Resources | None = Field(
        None, description="per-replica request; cpu and memory metrics are fractions of it"
    )
    autoscale: ScalingPolicy | None = None

    prometheus: dict[EngineMetric, str] = Field(
        default_factory=dict,
        description="take these metrics from Prometheus instead (metric -> PromQL instant "
        "query); needs metrics.prometheus_url",
    )
    database: DatabaseBudget | None = Field(
        None,
        description="connection budget: max replicas x pool_size must fit in "
        "max_connections - reserve (checked here, clamped by the controller)",
    )

    @field_validator("database")
    @classmethod
    def _budget_fits(cls, value: DatabaseBudget | None, info: ValidationInfo) -> Any:
        # declared after replicas and autoscale, so both are validated (or failed) already
        replicas, autoscale = info.data.get("replicas"), info.data.get("autoscale", None)
        if value is None or not isinstance(replicas, int) or "autoscale" not in info.data:
            return value
        budget = _budget(value, replicas, autoscale)
        if not budget.fits:
            raise ValueError(budget.problem())
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _default_kind(cls, value: Any) -> Any:
        """`kind: process` is the default, so a backend without `kind` is a process."""
        if isinstance(value, Mapping) and "kind" not in value:
            return {"kind": "process", **value}
        return value

    @property
    def request(self) -> Resources | None:
        """What cpu and memory fractions divide by: ``resources``, field by field
        falling back to a container backend's limits (``cpus``, ``memory``)."""
        own = self.resources or Resources()
        backend = self.backend
        if isinstance(backend, DockerBackend | SwarmBackend):
            own = Resources(cpu=own.cpu or backend.cpus, memory=own.memory or backend.memory)
        return own if own.cpu is not None or own.memory is not None else None

    @model_validator(mode="after")
    def _advisor_dry_run(self) -> Service:
        if (problem := advisor_problem(self.backend, self.autoscale)) is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _autoscale_fits(self) -> Service:
        policy = self.autoscale
        if policy is None:
            return self
        needs = {getattr(c, "metric", None) for c in policy.checks}
        lacking = [
            m
            for m in ("cpu", "memory")
            if m in needs and m not in self.prometheus and getattr(self.request, m, None) is None
        ]
        if lacking:
            raise ValueError(
                f"autoscale uses {' and '.join(lacking)}, measured as a fraction of the "
                f"replica's request: add `resources: {{{', '.join(f'{m}: ...' for m in lacking)}}}`"
                " to the service, e.g. `resources: {cpu: 0.5, memory: 256Mi}` (a docker or "
                "swarm backend's `cpus`/`memory` limits serve as the request too)"
            )
        return self

    _listen = field_validator("frontend", mode="before")(lambda cls, v: _parse_listen(v))
