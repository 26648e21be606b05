"""Manual and automatic scaling agree: clamps for `skylift scale`, and `autoscale pause`.

A count set by hand on an autoscaled service lands inside the policy's
``[min, max]`` (and under the connection budget), with the reason named, so
the next decision does not undo it by draining what was just started. An
operator's pause is kept in the store (it survives restarts) and makes the
engine hold whatever count runs, so a paused service keeps the counts set by
``skylift scale``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from skylift.controller.autoscaler import Autoscaler
from skylift.controller.budget import Ceiling

if TYPE_CHECKING:
    from skylift.controller.core import Controller


class NotAutoscaledService(KeyError):
    """Pause/resume named a service without an autoscale policy."""


def manual_clamp(
    asked: int, autoscaler: Autoscaler | None, ceiling: Ceiling | None
) -> tuple[int, str | None]:
    """Pure: where a hand-set count lands, and why when it is not what was asked."""
    applied = asked
    reasons: list[str] = []
    if autoscaler is not None:
        policy = autoscaler.policy
        if applied > policy.max:
            applied = policy.max
            reasons.append(f"capped at {applied} by the autoscale policy's max {policy.max}")
        elif applied < policy.min:
            applied = policy.min
            reasons.append(f"raised to {applied} by the autoscale policy's min {policy.min}")
    if ceiling is not None and applied > ceiling.replicas:
        applied = ceiling.replicas
        reasons.append(f"capped at {applied} by the {ceiling.reason}")
    if not reasons:
        return applied, None
    hint = (
        " (change the policy with `skylift apply`)"
        if autoscaler is not None and asked != applied
        else ""
    )
    return applied, f"{asked} asked, " + "; ".join(reasons) + hint


def restore_pauses(ctl: Controller) -> None:
    """At start (and after `apply` replaced a policy): pauses kept in the store apply again."""
    for service, since in ctl.store.autoscale_pauses().items():
        autoscaler = ctl.autoscalers.get(service)
        if autoscaler is not None and autoscaler.paused_since is None:
            autoscaler.pause(since)


def set_paused(ctl: Controller, service: str, paused: bool) -> dict[str, Any]:
    """``skylift autoscale pause|resume``: stored first, then applied; idempotent."""
    ctl._loop(service)  # UnknownService for a name the config lacks
    autoscaler = ctl.autoscalers.get(service)
    if autoscaler is None:
        raise NotAutoscaledService(service)
    was = autoscaler.paused_since is not None
    if paused:
        ctl.store.set_autoscale_paused(service, True, reason="skylift autoscale pause")
        since = ctl.store.autoscale_pauses().get(service, time.time())
        if not was:
            autoscaler.pause(since)
    else:
        ctl.store.set_autoscale_paused(service, False)
        if was:
            autoscaler.resume()
    if was != paused:
        loop = ctl.loops[service]
        verb = "paused" if paused else "resumed"
        more = (
            f"holding {loop.desired} replicas; `skylift scale` sets the count"
            if paused
            else "the next decision starts from the current count"
        )
        ctl.recorder.event(
            f"autoscale_{verb}",
            f"autoscaling {verb} by an operator: {more}",
            service=service,
            desired=loop.desired,
        )
    return {"service": service, **pause_view(autoscaler)}


def pause_view(autoscaler: Autoscaler) -> dict[str, Any]:
    """What status and explain show about a pause."""
    return {
        "paused": autoscaler.paused,
        "paused_by": (
            "operator"
            if autoscaler.paused_since is not None
            else ("config" if autoscaler.policy.paused else None)
        ),
        "paused_since": autoscaler.paused_since,
    }


def explain_pause(out: dict[str, Any], autoscaler: Autoscaler) -> dict[str, Any]:
    """``skylift explain`` of a paused service says so first."""
    view = pause_view(autoscaler)
    out.update(view)
    if view["paused"]:
        why = (
            "autoscaling is paused by an operator (`skylift autoscale resume` ends it)"
            if view["paused_by"] == "operator"
            else "autoscaling is paused by the config (autoscale.paused: true)"
        )
        out["reasons"] = [f"{why}: holding the current count", *out.get("reasons", [])]
    return out
