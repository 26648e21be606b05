"""From the one multi-region file to what each region runs: pure derivations.

A region's controller is the phase-1 controller given :func:`region_config`:
the shared service definitions with the region's overrides merged in, its
ports shifted by ``port_offset`` (several regions on one host), its own state
directory, store and lock (never another region's), and its data's addresses
in each replica's environment. The edge gets :func:`edge_spec`; the rules get
:func:`topology_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skylift.config.base import split_listen
from skylift.config.root import SkyliftConfig
from skylift.config.settings import ApiSettings, HAProxySettings
from skylift.edge.cache import EdgeCache
from skylift.edge.spec import EdgeSpec, RegionCheck
from skylift.regions.rules import RegionFacts, Topology

ALL = "all"
WILDCARDS = frozenset({"0.0.0.0", "::", "", "*"})  # noqa: S104 (recognised, never bound)


class RegionSelectionError(ValueError):
    """``--region`` names no region of the file; the message lists the valid ones."""


def topology_of(config: SkyliftConfig) -> Topology:
    """The rules' view of the file's phase-2 regions."""
    regions = config.edged_regions
    holds = {r.standby.region: name for name, r in regions.items() if r.standby is not None}
    facts = tuple(
        RegionFacts(
            name=name,
            zone=str(region.zone),
            countries=frozenset(region.countries),
            nearest=tuple(region.nearest),
            standby_of=holds.get(name),
        )
        for name, region in regions.items()
    )
    default = config.edge.default_region or next(iter(regions))
    return Topology(facts, default=default, mode=config.edge.mode)


def select_regions(config: SkyliftConfig, selector: str) -> list[str]:
    """``--region NAME`` -> [NAME]; ``--region all`` -> every phase-2 region."""
    regions = list(config.edged_regions)
    if not regions:
        raise RegionSelectionError(
            "the config defines no region with an edge: add `regions:` entries with `zone` "
            "and `edge`, or run without --region"
        )
    if selector == ALL:
        return regions
    if selector not in regions:
        raise RegionSelectionError(
            f"--region {selector!r} is not a region of this config: use one of "
            f"{', '.join(regions)} or 'all'"
        )
    return [selector]


def edge_service(config: SkyliftConfig) -> str:
    return config.edge.service or next(iter(config.services))


def shift_listen(listen: str, offset: int) -> str:
    host, port = split_listen(listen)
    return f"{host}:{port + offset}"


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of plain data: mappings merge, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def region_env(config: SkyliftConfig, name: str) -> dict[str, str]:
    """Where this region's data lives, for every replica it runs (overrides win)."""
    region = config.regions[name]
    env = {
        "SKYLIFT_REGION": name,
        "SKYLIFT_ZONE": str(region.zone),
        "SKYLIFT_REGION_DATABASE_URL": region.database_url,
    }
    if region.redis_url:
        env["SKYLIFT_REGION_REDIS_URL"] = region.redis_url
    for primary, other in config.regions.items():
        if other.standby is not None and other.standby.region == name:
            env["SKYLIFT_REGION_STANDBY_OF"] = primary
            env["SKYLIFT_REGION_STANDBY_DATABASE_URL"] = other.standby.database_url
    return env


def _shift_service(data: dict[str, Any], offset: int, env: Mapping[str, str]) -> dict[str, Any]:
    if offset:
        data["frontend"] = shift_listen(str(data["frontend"]), offset)
        ports = data.get("backend", {}).get("ports")
        if isinstance(ports, Mapping):
            data["backend"]["ports"] = {k: int(v) + offset for k, v in ports.items()}
    backend = data.setdefault("backend", {})
    backend["env"] = {**env, **backend.get("env", {})}
    return data


def region_config(config: SkyliftConfig, name: str) -> SkyliftConfig:
    """The single-region config one region's controller runs."""
    region = config.regions[name]
    offset = region.port_offset
    env = region_env(config, name)
    services = {
        svc: _shift_service(
            _merge(service.model_dump(mode="json"), region.services.get(svc, {})), offset, env
        )
        for svc, service in config.services.items()
    }
    api = region.api or ApiSettings(listen=shift_listen(config.api.listen, offset))
    haproxy = config.haproxy.model_dump(mode="json")
    haproxy["metrics"] = shift_listen(config.haproxy.metrics, offset)
    data: dict[str, Any] = {
        "project": f"{config.project}-{name}",
        "state_dir": region.state_dir or f"{config.state_dir}/{name}",
        "interval": config.interval,
        "api": api.model_dump(mode="json"),
        "haproxy": HAProxySettings.model_validate(haproxy).model_dump(mode="json"),
        # a region's own store and lock, never the root's (it could be another region's)
        "store": region.store.model_dump(mode="json") if region.store else {},
        "metrics": config.metrics.model_dump(mode="json"),
        "retention": config.retention.model_dump(mode="json"),
        "services": services,
        "regions": {name: region.model_dump(mode="json", include={"database_url", "backup"})},
    }
    return SkyliftConfig.model_validate(data, context={"validated": True})


def edge_spec(
    config: SkyliftConfig,
    name: str,
    config_dir: Path,
    token_keys: Mapping[str, str] | None = None,
) -> EdgeSpec:
    """What region ``name``'s edge renders: its peers, its own pool, what it trusts."""
    regions = config.edged_regions
    region = regions[name]
    assert region.edge is not None
    own = region_config(config, name)
    host, port = split_listen(own.services[edge_service(config)].frontend)
    local = f"{'127.0.0.1' if host in WILDCARDS else host}:{port}"
    peers = {
        other: region.edge.reach.get(other, str(r.edge.listen if r.edge else ""))
        for other, r in regions.items()
        if other != name
    }
    trusted = {
        split_listen(r.edge.listen)[0]
        for other, r in regions.items()
        if other != name and r.edge is not None
    } - WILDCARDS
    check = config.edge.check
    geoip = config.edge.geoip_map
    state_dir = Path(own.state_dir)
    return EdgeSpec(
        region=name,
        topology=topology_of(config),
        listen=region.edge.listen,
        local=local,
        peers=peers,
        trusted_peers=frozenset(trusted),
        state_dir=(state_dir if state_dir.is_absolute() else config_dir / state_dir) / "edge",
        token_keys=dict(token_keys or {}),
        check=RegionCheck(
            path=check.path,
            inter=check.inter,
            fall=check.fall,
            rise=check.rise,
            timeout=check.timeout,
        ),
        geoip_map=(config_dir / geoip) if geoip else None,
        extra_countries=dict(config.edge.extra_countries),
        retry_after=config.edge.retry_after,
        metrics_listen=region.edge.metrics,
        cache=edge_cache(config),
    )


def edge_cache(config: SkyliftConfig) -> EdgeCache | None:
    """The shared ``edge.cache`` as every region's edge renders it (None: off)."""
    cache = config.edge.cache
    if cache is None:
        return None
    return EdgeCache(
        paths=tuple(cache.paths),
        max_age=cache.max_age,
        total_max_size=cache.total_max_size,
        max_object_size=cache.max_object_size,
        bypass_cookies=tuple(cache.bypass_cookies),
    )


def shared_host_clashes(config: SkyliftConfig, names: list[str]) -> list[str]:
    """Ports two regions run on one host (``--region all``) would both take."""
    from skylift.config.root import port_clashes
    from skylift.config.service import ProcessBackend

    listeners: dict[str, int] = {}
    ranges: dict[str, tuple[int, int]] = {}
    for name in names:
        own = region_config(config, name)
        listeners[f"regions.{name}.api.listen"] = split_listen(own.api.listen)[1]
        listeners[f"regions.{name}.haproxy.metrics"] = split_listen(own.haproxy.metrics)[1]
        edge = config.regions[name].edge
        if edge is not None:
            listeners[f"regions.{name}.edge.listen"] = split_listen(edge.listen)[1]
        for svc, service in own.services.items():
            listeners[f"regions.{name}.services.{svc}.frontend"] = split_listen(service.frontend)[1]
            if isinstance(service.backend, ProcessBackend):
                ports = service.backend.ports
                ranges[f"{svc} of {name}"] = (ports.start, ports.end)
    return port_clashes(listeners, ranges)
