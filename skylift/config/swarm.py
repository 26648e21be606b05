"""The ``backend: {kind: swarm, ...}`` block of a service (see docs/swarm.md).

Kept apart from :mod:`skylift.config` like :mod:`skylift.config.docker`; the
field names are the docker backend's, so moving a service between ``docker``
and ``swarm`` changes only ``kind``.
"""

from __future__ import annotations

from typing import Literal

from skylift.config.docker import ContainerBackend


class SwarmBackend(ContainerBackend):
    """Each replica is a one-task Swarm service, published in host mode on an ephemeral port.

    Host mode cannot be bound to one address: the port listens on every
    interface (see docs/swarm.md).
    """

    kind: Literal["swarm"] = "swarm"
