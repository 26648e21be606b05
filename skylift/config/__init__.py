"""The typed model of ``skylift.yaml``, loaded once.

Precedence: defaults < YAML file < ``SKYLIFT_*`` environment < CLI flags.
Every error is reported at once with its field path and a hint (see
:func:`load_config` and :class:`ConfigError`).

One module per concern: ``base`` (strict model, names, addresses), ``service``
(a service and its parts), ``settings`` (HAProxy, API, metrics, store),
``root`` (the file's root and cross-service checks), ``loading`` (YAML, env,
errors, JSON Schema), ``docker``/``swarm`` (container backends), ``regions``.
Names are re-exported here lazily, so a lean process (a backup worker) that
imports ``skylift.config.regions`` does not pay for the scaling engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skylift.config.base import ConfigIssue, PortRange, split_listen
    from skylift.config.loading import ConfigError, LoadedConfig, json_schema, load_config
    from skylift.config.root import SkyliftConfig, port_clashes
    from skylift.config.service import (
        Backoff,
        ConnectionBudget,
        DatabaseBudget,
        HealthCheck,
        ProcessBackend,
        Service,
        connection_budget,
    )
    from skylift.config.settings import (
        ApiSettings,
        HAProxySettings,
        MetricsSettings,
        StoreSettings,
    )

_WHERE = {
    "ConfigIssue": "base",
    "PortRange": "base",
    "split_listen": "base",
    "ConfigError": "loading",
    "LoadedConfig": "loading",
    "json_schema": "loading",
    "load_config": "loading",
    "SkyliftConfig": "root",
    "port_clashes": "root",
    "Backoff": "service",
    "ConnectionBudget": "service",
    "DatabaseBudget": "service",
    "HealthCheck": "service",
    "ProcessBackend": "service",
    "Service": "service",
    "connection_budget": "service",
    "ApiSettings": "settings",
    "HAProxySettings": "settings",
    "MetricsSettings": "settings",
    "StoreSettings": "settings",
}

__all__ = [
    "ApiSettings",
    "Backoff",
    "ConfigError",
    "ConfigIssue",
    "ConnectionBudget",
    "DatabaseBudget",
    "HAProxySettings",
    "HealthCheck",
    "LoadedConfig",
    "MetricsSettings",
    "PortRange",
    "ProcessBackend",
    "Service",
    "SkyliftConfig",
    "StoreSettings",
    "connection_budget",
    "json_schema",
    "load_config",
    "port_clashes",
    "split_listen",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'skylift.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"skylift.config.{module}"), name)
