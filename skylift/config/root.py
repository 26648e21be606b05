"""The root of ``skylift.yaml`` and the checks that span services (port clashes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from skylift.config.audit_aggregation import AuditAggregation, aggregation_problems
from skylift.config.backup_targets import shared_backup_targets
from skylift.config.base import (
    _NAME_HINT,
    _NAME_RE,
    ConfigIssue,
    Model,
    _parse_listen,
    split_listen,
)
from skylift.config.dns import DnsSettings, dns_problems
from skylift.config.regions import Region
from skylift.config.replication import ReplicationSettings
from skylift.config.service import ProcessBackend, Service
from skylift.config.settings import (
    ApiSettings,
    EdgeSettings,
    FailoverSettings,
    HAProxySettings,
    MetricsSettings,
    RetentionSettings,
    StoreSettings,
)
from skylift.units import Duration


class SkyliftConfig(Model):
    """Root of ``skylift.yaml``."""

    project: str = Field("skylift", description="name used in labels and state")
    state_dir: str = Field(".skylift", description="state, sockets, logs (relative to config)")
    interval: Duration = Field(1.0, description="reconcile loop period")
    api: ApiSettings = ApiSettings()
    haproxy: HAProxySettings = HAProxySettings()
    store: StoreSettings = StoreSettings()
    metrics: MetricsSettings = MetricsSettings()
    retention: RetentionSettings = RetentionSettings()
    services: dict[str, Service] = Field(default_factory=dict)
    regions: dict[str, Region] = Field(
        default_factory=dict,
        description="phase-2 regions: data, edge, services and control plane per region "
        "(or only a database and its Telegram backups)",
    )
    edge: EdgeSettings = EdgeSettings()
    failover: FailoverSettings = FailoverSettings()
    audit_aggregation: AuditAggregation | None = Field(
        None, description="cross-region audit aggregation (off unless set; regions opt in)"
    )
    replication: ReplicationSettings | None = Field(
        None, description="opt-in cross-zone copies of opted-in users' rows (docs/replication.md)"
    )
    dns: DnsSettings | None = Field(
        None, description="geo-DNS front: PowerDNS answering each country with an edge"
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
            if name == "all":
                raise ValueError("'all' is reserved (`--region all` runs every region)")
            if not _NAME_RE.match(name):
                raise ValueError(f"invalid region name {name!r}: {_NAME_HINT}")
        return value

    @property
    def edged_regions(self) -> dict[str, Region]:
        """The phase-2 regions (those with an edge); backup-only regions are not among them."""
        return {n: r for n, r in self.regions.items() if r.edge is not None}

    @model_validator(mode="after")
    def _regions_fit_together(self) -> SkyliftConfig:
        edged = self.edged_regions
        if not edged:
            return self
        problems = region_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _audit_aggregation_fits(self) -> SkyliftConfig:
        problems = aggregation_problems(self.audit_aggregation, set(self.edged_regions))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _backups_stay_apart(self) -> SkyliftConfig:
        problems = shared_backup_targets(self.regions)  # no two regions share a chat or bot
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _dns_fits_regions(self) -> SkyliftConfig:
        problems = dns_problems(self.dns, self.regions) if self.dns is not None else []
        if problems:
            raise ValueError("; ".join(problems))
        return self

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


def region_problems(config: SkyliftConfig) -> list[str]:
    """What makes a set of phase-2 regions inconsistent, each with its fix."""
    regions = config.regions
    problems = []
    missing = [n for n, r in regions.items() if r.edge is None or r.zone is None]
    if missing:
        problems.append(
            f"regions {', '.join(missing)} lack `zone` or `edge`: once one region has an edge, "
            "every region needs both"
        )
    for name, region in regions.items():
        unknown = [
            n
            for n in [*region.nearest, *(region.edge.reach if region.edge else {})]
            if n not in regions or n == name
        ]
        if unknown:
            problems.append(f"regions.{name}: nearest/reach name unknown regions {unknown}")
        if region.standby is not None:
            holder = regions.get(region.standby.region)
            if holder is None or holder is region or holder.zone != region.zone:
                problems.append(
                    f"regions.{name}.standby.region must be another region of zone "
                    f"{region.zone!r} (a standby never leaves the zone)"
                )
        unknown_services = [s for s in region.services if s not in config.services]
        if unknown_services:
            problems.append(
                f"regions.{name}.services overrides unknown services {unknown_services}: "
                "define them under the root `services:` first"
            )
    holders = [r.standby.region for r in regions.values() if r.standby is not None]
    if len(holders) != len(set(holders)):
        problems.append("a region can hold the standby of one other region only")
    if config.edge.default_region is not None and config.edge.default_region not in regions:
        problems.append(f"edge.default_region {config.edge.default_region!r} is not a region")
    service = config.edge.service
    if service is None and len(config.services) != 1:
        problems.append("edge.service is not set: name the service the edges front")
    elif service is not None and service not in config.services:
        problems.append(f"edge.service {service!r} is not a service")
    return problems


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
