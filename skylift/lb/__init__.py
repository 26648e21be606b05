"""HAProxy as skylift's data plane: pure config rendering, a detached
master-worker process, and the runtime API for membership changes."""

from skylift.lb.balancer import HAProxyBalancer, ServerStatus
from skylift.lb.errors import (
    ConfigInvalid,
    HAProxyError,
    HAProxyNotFound,
    HAProxyStartError,
    NoSuchServer,
    ReloadError,
    RuntimeAPIError,
    SocketUnavailable,
)
from skylift.lb.render import HAProxySpec, ServerSpec, ServiceSpec, render_config
from skylift.lb.stats import ServerState

__all__ = [
    "ConfigInvalid",
    "HAProxyBalancer",
    "HAProxyError",
    "HAProxyNotFound",
    "HAProxySpec",
    "HAProxyStartError",
    "NoSuchServer",
    "ReloadError",
    "RuntimeAPIError",
    "ServerSpec",
    "ServerState",
    "ServerStatus",
    "ServiceSpec",
    "SocketUnavailable",
    "render_config",
]
