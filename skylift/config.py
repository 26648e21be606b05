"""The typed model of ``skylift.yaml``, loaded once.

Precedence: defaults < YAML file < ``SKYLIFT_*`` environment < CLI flags.
Every error is reported at once with its field path and a hint (see
:func:`load_config` and :class:`ConfigError`).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skylift.config_docker import DockerBackend
from skylift.config_regions import Region
from skylift.config_swarm import SwarmBackend
from skylift.engine import ScalingPolicy
from skylift.metrics.resources import Resources
from skylift.units import Duration

ENV_PREFIX = "SKYLIFT_"
BACKEND_KINDS = ("process", "docker", "swarm")
EngineMetric = Literal["cpu", "memory", "rps", "connections", "p95_latency", "queue"]
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_NAME_HINT = "use lowercase letters, digits and '-', starting with a letter (max 31 chars)"


class Model(BaseModel):
    """Base: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_listen(value: Any) -> str:
    if not isinstance(value, str | int):
        raise ValueError("write an address like '127.0.0.1:8080'")
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {text!r}: write 'HOST:PORT' with a port in 1-65535")
    return f"{host or '127.0.0.1'}:{int(port)}"


Listen = Annotated[
    str,
    Field(json_schema_extra={"pattern": r"^([^:]*:)?\d{1,5}$"}),
]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


class PortRange(Model):
    """Loopback ports handed out to replicas, inclusive."""

    start: int = Field(20000, ge=1024, le=65535)
    end: int = Field(20999, ge=1024, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) > end ({self.end}): swap them")
        return self

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end


class ProcessBackend(Model):
    """Replicas are local processes (the embedded default)."""

    kind: Literal["process"] = "process"
    command: str = Field(
        description="command line; '{port}' is replaced by the replica's port, "
        "'{replica}' by its id"
    )
    ports: PortRange = PortRange()
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = Field(None, description="working directory (relative to the config)")

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


class HealthCheck(Model):
    """HTTP health check run by HAProxy (``option httpchk``)."""

    path: str = "/healthz"
    interval: Duration = 2.0
    timeout: Duration = 1.0
    fall: int = Field(3, ge=1, le=100)
    rise: int = Field(2, ge=1, le=100)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ValueError(f"invalid path {value!r}: write an absolute URL path like '/healthz'")
        return value


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
        ProcessBackend | DockerBackend | SwarmBackend, Field(discriminator="kind")
    ] = Field(description="where replicas run: `kind: process` (default), `docker` or `swarm`")
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


class HAProxySettings(Model):
    """The local HAProxy that balances every service."""

    binary: str = Field("haproxy", description="name on PATH or absolute path")
    metrics: Listen = Field("127.0.0.1:8405", description="built-in Prometheus exporter (loopback)")
    timeout_connect: Duration = 2.0
    timeout_client: Duration = 30.0
    timeout_server: Duration = 30.0
    maxconn: int = Field(4096, ge=1)

    _listen = field_validator("metrics", mode="before")(lambda cls, v: _parse_listen(v))


class ApiSettings(Model):
    """skylift's own HTTP API (bearer token in the state directory)."""

    listen: Listen = "127.0.0.1:8470"

    _listen = field_validator("listen", mode="before")(lambda cls, v: _parse_listen(v))

    @field_validator("listen")
    @classmethod
    def _loopback(cls, value: str) -> str:
        host, _ = split_listen(value)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"API on {host!r} would be reachable from outside: bind it to 127.0.0.1 "
                "and put a TLS proxy in front if you need remote access"
            )
        return value


class MetricsSettings(Model):
    """How the autoscaler observes services."""

    prometheus_url: str | None = Field(
        None, description="Prometheus base URL for services' `prometheus:` queries"
    )

    window: Duration = Field(30.0, description="averaging window the engine sees")
    stale_after: int = Field(
        3, ge=1, description="intervals without a fresh sample before a source counts as failing"
    )


class StoreSettings(Model):
    """Where state and events live. SQLite in the state directory unless a URL is given."""

    url: str | None = Field(
        None, description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db"
    )


class SkyliftConfig(Model):
    """Root of ``skylift.yaml``."""

    project: str = Field("skylift", description="name used in labels and state")
    state_dir: str = Field(".skylift", description="state, sockets, logs (relative to config)")
    interval: Duration = Field(1.0, description="reconcile loop period")
    api: ApiSettings = ApiSettings()
    haproxy: HAProxySettings = HAProxySettings()
    store: StoreSettings = StoreSettings()
    metrics: MetricsSettings = MetricsSettings()
    services: dict[str, Service] = Field(default_factory=dict)
    regions: dict[str, Region] = Field(
        default_factory=dict, description="phase-2 regions: database and Telegram backups"
    )

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"invalid name {value!r}: {_NAME_HINT}")
        return value

    @model_validator(mode="after")
    def _something_to_run(self) -> SkyliftConfig:
        if not self.services and not self.regions:
            raise ValueError(
                "no services and no regions: add a `services:` block (or `regions:` for a "
                "backup-only config)"
            )
        return self

    @field_validator("regions")
    @classmethod
    def _region_names(cls, value: dict[str, Region]) -> dict[str, Region]:
        for name in value:
            if not _NAME_RE.match(name):
                raise ValueError(f"invalid region name {name!r}: {_NAME_HINT}")
        return value

    @model_validator(mode="after")
    def _prometheus_has_url(self) -> SkyliftConfig:
        users = [n for n, s in self.services.items() if s.prometheus]
        if users and not self.metrics.prometheus_url:
            raise ValueError(
                f"services {', '.join(users)} query Prometheus but metrics.prometheus_url is "
                "not set: add `metrics: {prometheus_url: http://127.0.0.1:9090}`"
            )
        return self

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, Service]) -> dict[str, Service]:
        for name in value:
            if not _NAME_RE.match(name):
                raise ValueError(f"invalid service name {name!r}: {_NAME_HINT}")
        return value

    @model_validator(mode="after")
    def _no_port_clash(self) -> SkyliftConfig:
        clashes = port_clashes(
            {
                "api.listen": split_listen(self.api.listen)[1],
                "haproxy.metrics": split_listen(self.haproxy.metrics)[1],
                **{
                    f"services.{n}.frontend": split_listen(s.frontend)[1]
                    for n, s in self.services.items()
                },
            },
            {
                n: (s.backend.ports.start, s.backend.ports.end)
                for n, s in self.services.items()
                if isinstance(s.backend, ProcessBackend)
            },
        )
        if clashes:
            raise ValueError("port clash: " + "; ".join(clashes) + ": give each a distinct port")
        return self


def port_clashes(listeners: Mapping[str, int], ranges: Mapping[str, tuple[int, int]]) -> list[str]:
    """Every pair of things that would try to use the same port."""
    taken: dict[int, str] = {}
    clashes: list[str] = []
    for owner, port in listeners.items():
        if port in taken:
            clashes.append(f"port {port} is used by both {taken[port]} and {owner}")
        else:
            taken[port] = owner
    for port, owner in taken.items():
        for name, (start, end) in ranges.items():
            if start <= port <= end:
                clashes.append(
                    f"{owner} port {port} lies inside services.{name}.backend.ports ({start}-{end})"
                )
    items = list(ranges.items())
    for i, (name_a, (a_start, a_end)) in enumerate(items):
        for name_b, (b_start, b_end) in items[i + 1 :]:
            if a_start <= b_end and b_start <= a_end:
                clashes.append(
                    f"services.{name_a}.backend.ports and services.{name_b}.backend.ports overlap"
                )
    return clashes


def _raw_port_clashes(data: Mapping[str, Any]) -> list[ConfigIssue]:
    """Port clashes found in the raw data, so they show up beside field errors."""
    listeners: dict[str, int] = {}
    ranges: dict[str, tuple[int, int]] = {}

    def port_of(value: Any) -> int | None:
        try:
            return split_listen(_parse_listen(value))[1]
        except ValueError:
            return None

    def section(key: str) -> Mapping[str, Any]:
        value = data.get(key)
        return value if isinstance(value, Mapping) else {}

    defaults = {"api.listen": "127.0.0.1:8470", "haproxy.metrics": "127.0.0.1:8405"}
    for owner, default in defaults.items():
        head, field = owner.split(".")
        port = port_of(section(head).get(field, default))
        if port is not None:
            listeners[owner] = port
    for name, svc in section("services").items():
        if not isinstance(svc, Mapping):
            continue
        port = port_of(svc.get("frontend"))
        if port is not None:
            listeners[f"services.{name}.frontend"] = port
        backend = svc.get("backend")
        if not isinstance(backend, Mapping) or backend.get("kind", "process") != "process":
            continue  # only process replicas take ports from a range
        ports = backend.get("ports", {})
        if isinstance(ports, Mapping):
            start, end = ports.get("start", 20000), ports.get("end", 20999)
            if isinstance(start, int) and isinstance(end, int):
                ranges[str(name)] = (start, end)
    return [
        ConfigIssue("(root)", f"port clash: {c}", "give each a distinct port")
        for c in port_clashes(listeners, ranges)
    ]


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from (paths resolve against it)."""

    config: SkyliftConfig
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return (self.base_dir / self.config.state_dir).resolve()

    @property
    def store_url(self) -> str:
        return self.config.store.url or f"sqlite:///{self.state_dir / 'skylift.db'}"

    def haproxy_binary(self) -> str | None:
        return shutil.which(self.config.haproxy.binary)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where, what, and how to fix it."""

    path: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")


class ConfigError(Exception):
    """The config could not be loaded; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"{source}: {len(issues)} error(s)\n" + "\n".join(map(str, issues)))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SKYLIFT_SERVICES__WEB__REPLICAS=5`` -> ``{"services": {"web": {"replicas": 5}}}``."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts or parts[0] not in SkyliftConfig.model_fields:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else raw
    return tree


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


def _known_fields(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names allowed at ``loc`` (to suggest a fix for a misspelt key)."""
    model: Any = root
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                return []
            model = field.annotation
        else:
            args = getattr(model, "__args__", ())
            candidates = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if not candidates:
                return []
            model = candidates[0]
            field = model.model_fields.get(str(part))
            model = field.annotation if field else model
        while getattr(model, "__args__", None) and not (
            isinstance(model, type) and issubclass(model, BaseModel)
        ):
            models = [a for a in model.__args__ if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                break
            model = models[0]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _issues_from(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in error.errors():
        loc = _strip_union_tags(tuple(err["loc"]))
        path = ".".join(str(p) for p in loc) or "(root)"
        kind = err["type"]
        message = err["msg"].removeprefix("Value error, ")
        hint = ""
        if kind == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
            # services.<name> is a dict key, not a field: skip it when looking up fields
            known = _known_fields(SkyliftConfig, _strip_dict_keys(loc[:-1]))
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "remove it; allowed: " + ", ".join(known)
            )
        elif kind == "missing":
            message = "required field is missing"
            hint = "add it (see `skylift config schema`)"
        elif kind.startswith(("int_", "float_", "bool_", "string_")):
            hint = f"got {err.get('input')!r}"
        issues.append(ConfigIssue(path, message, hint))
    return issues


def _strip_union_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's union tag (``backend.process.command`` -> ``backend.command``)."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "backend" and part in BACKEND_KINDS:
            continue
        out.append(part)
    return tuple(out)


def _strip_dict_keys(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    out: list[int | str] = []
    skip_next = False
    for part in loc:
        if skip_next:
            skip_next = False
            continue
        out.append(part)
        if part in ("services", "env", "regions"):
            skip_next = True
    return tuple(out)


def load_config(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Read, merge and validate a config file; raise :class:`ConfigError` with every problem."""
    file = Path(path)
    source = str(file)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            source, [ConfigIssue("(file)", "file not found", "check the path given with -c")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(
            source, [ConfigIssue(where, f"not valid YAML: {exc}", "fix the YAML syntax")]
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            source, [ConfigIssue("(root)", "top level must be a mapping", "start with 'services:'")]
        )
    data = _merge(raw, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, dict(overrides))
    try:
        config = SkyliftConfig.model_validate(data)
    except ValidationError as exc:
        issues = _issues_from(exc)
        if not any("port clash" in i.message for i in issues):
            issues += _raw_port_clashes(data)
        raise ConfigError(source, issues) from None
    return LoadedConfig(config=config, path=file.resolve())


def json_schema() -> dict[str, Any]:
    """The JSON Schema of skylift.yaml, committed as ``skylift.schema.json``."""
    schema = SkyliftConfig.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "skylift.yaml"
    return schema
