"""The connection-budget ceiling: never more replicas than the database can serve.

The config validator already refuses a ``max`` whose pools cannot fit, but a
count can still come from elsewhere: ``skylift scale``, or a schedule whose
``max`` replaces the policy's while it is active. Every such count passes
through :meth:`Ceiling.cap`, and an autoscaling decision gets a visible
``connection budget`` clamp, so ``skylift explain`` says why it stopped there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from skylift.config import Service, connection_budget
from skylift.engine import Clamp, Decision
from skylift.engine.model import Direction

STAGE = "connection budget"


@dataclass(frozen=True, slots=True)
class Ceiling:
    """At most ``replicas``; ``reason`` says which numbers make it so."""

    replicas: int
    reason: str

    def cap(self, desired: int) -> int:
        return min(desired, self.replicas)

    def clamp(self, decision: Decision) -> Decision:
        """``desired`` (and a dry run's ``proposed``) capped, the clamp kept as a reason."""
        if decision.desired <= self.replicas and decision.proposed <= self.replicas:
            return decision
        desired = self.cap(decision.desired)
        before = max(decision.desired, decision.proposed)
        direction: Direction
        if desired > decision.current:
            direction = "up"
        elif desired < decision.current:
            direction = "down"
        else:
            direction = "hold"
        return dataclasses.replace(
            decision,
            desired=desired,
            proposed=self.cap(decision.proposed),
            direction=direction,
            clamps=(*decision.clamps, Clamp(STAGE, before, self.replicas, self.reason)),
        )


def ceiling_of(service: Service) -> Ceiling | None:
    """The service's ceiling, or None when it declares no ``database`` budget."""
    budget = connection_budget(service)
    if budget is None:
        return None
    allowed = budget.replicas_allowed
    return Ceiling(
        allowed,
        f"connection budget: {allowed} replicas x pool_size {budget.pool_size} fit in "
        f"max_connections {budget.max_connections} - reserve {budget.reserve} "
        f"= {budget.available}",
    )
