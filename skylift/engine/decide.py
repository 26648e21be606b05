"""``decide``: one pure function from (policy, observations, state, now) to a Decision.

The pipeline, each stage recording a Clamp when it moves the count:

1. every check recommends a count; they combine the Nomad way (safest wins);
2. missing data: never scale down while a check's metric is missing;
3. fallback: after N decisions with missing data, keep at least ``replicas``;
4. stabilization windows (Kubernetes: lowest recent for up, highest for down);
5. cooldown after the last scaling action;
6. rate limits per period (Kubernetes ``behavior.policies``);
7. min/max; then ``paused`` / ``dry_run`` keep the count unchanged.

``semantics: hpa`` (the ``hpa`` preset) counts exactly as a Kubernetes HPA: a
target with 0 replicas is left alone, a count outside [min, max] goes straight
to the bound before any of the above, percent limits round as HPA rounds, and a
policy without a ``behavior`` block gets HPA's fixed cap of max(2 x current, 4)
and its 300 s scale-down window (see docs/engine.md).

Schedules and events (``wall``-clock windows) raise the min, replace the max
or multiply the load the checks see; a forecast ``Outlook`` (computed by the
caller's ``Forecaster``) is a floor under the combined checks, recorded as the
``forecast`` stage.
"""

from __future__ import annotations

import math

from skylift.engine.checks import view_windows, whole_percent
from skylift.engine.compiled import HPA_DOWNSCALE_WINDOW, CompiledDirection, CompiledPolicy
from skylift.engine.model import CheckResult, Clamp, Decision, Direction, Observations, State
from skylift.engine.policy import ScalingPolicy
from skylift.engine.predictive import Outlook


def combine(
    results: tuple[CheckResult, ...], current: int, group_of: tuple[int, ...] | None = None
) -> int:
    """Safest action wins: any up (largest), else any hold, else the smallest down.

    Inside a group only the checks that fire speak, so a high/low pair on one
    metric can scale down; across groups a hold vetoes a down. Missing checks
    abstain here; the missing-data stage then forbids a down.
    """
    if group_of is not None and max(group_of) > 0:
        return _combine_groups(results, current, group_of)
    single = group_of is not None
    up = -1
    down = -1
    hold = False
    for r in results:
        action = r.action
        rec = r.recommendation
        if rec is None:
            continue
        if action == "up":
            if rec > up:
                up = rec
        elif action == "down":
            if rec > down:
                down = rec
        else:
            hold = True
    if up >= 0:
        return up
    if down >= 0 and (single or not hold):
        return down
    return current


def _combine_groups(
    results: tuple[CheckResult, ...], current: int, group_of: tuple[int, ...]
) -> int:
    size = max(group_of) + 1
    g_up = [-1] * size
    g_down = [-1] * size
    g_hold = [False] * size
    for r, g in zip(results, group_of, strict=True):
        rec = r.recommendation
        if rec is None:
            continue
        action = r.action
        if action == "up":
            if rec > g_up[g]:
                g_up[g] = rec
        elif action == "down":
            if rec > g_down[g]:
                g_down[g] = rec
        else:
            g_hold[g] = True
    up = max(g_up)
    if up >= 0:
        return up
    down = -1
    for g in range(size):
        if g_down[g] < 0:
            if g_hold[g]:
                return current
        elif g_down[g] > down:
            down = g_down[g]
    return down if down >= 0 else current


def _periods_start(
    events: tuple[tuple[float, int], ...], now: float, period: float, current: int
) -> int:
    """Replica count at the start of the period (Kubernetes ``periodStartReplicas``)."""
    cutoff = now - period
    start = current
    for t, delta in events:
        if t > cutoff:
            start -= delta
    return start


def _hpa_percent(fraction: float) -> float:
    """HPA's percent as a float: ``float64(value)/100`` of its integer percent."""
    return whole_percent(fraction) / 100.0


def _up_limit(
    direction: CompiledDirection,
    events: tuple[tuple[float, int], ...],
    now: float,
    current: int,
    hpa: bool,
) -> int:
    best = -1 if direction.select_max else 1 << 62
    for is_percent, value, period in direction.limits:
        start = _periods_start(events, now, period, current)
        if not is_percent:
            proposed = start + int(value)
        elif hpa:
            # HPA: math.Ceil(float64(start) * (1 + float64(value)/100)), no noise guard,
            # so 100 * 1.1 = 110.00000000000001 allows 111.
            proposed = math.ceil(float(start) * (1.0 + _hpa_percent(value)))
        else:
            proposed = math.ceil(start * (1.0 + value) - 1e-9)
        best = max(best, proposed) if direction.select_max else min(best, proposed)
    return max(best, current)


def _down_limit(
    direction: CompiledDirection,
    events: tuple[tuple[float, int], ...],
    now: float,
    current: int,
    hpa: bool,
) -> int:
    best = 1 << 62 if direction.select_max else -1
    for is_percent, value, period in direction.limits:
        start = _periods_start(events, now, period, current)
        if not is_percent:
            proposed = start - int(value)
        elif hpa:
            # HPA: int32(float64(start) * (1 - float64(value)/100)) truncates toward
            # zero, so 90 * 0.7 = 62.99999999999999 allows 62.
            proposed = math.trunc(float(start) * (1.0 - _hpa_percent(value)))
        else:
            proposed = math.floor(start * (1.0 - value) + 1e-9)
        best = min(best, proposed) if direction.select_max else max(best, proposed)
    return min(best, current)


def _missing_metrics(results: tuple[CheckResult, ...]) -> str:
    return ", ".join(sorted({r.check.metric for r in results if r.recommendation is None}))


def _guard_missing(
    p: CompiledPolicy,
    results: tuple[CheckResult, ...],
    failures: int,
    current: int,
    v: int,
    clamps: list[Clamp],
) -> int:
    """Missing data never scales down; after N failures the fallback is a floor."""
    if v < current:
        clamps.append(
            Clamp(
                "missing data",
                v,
                current,
                f"no scale-down while {_missing_metrics(results)} is missing",
            )
        )
        v = current
    if p.fallback_after and failures >= p.fallback_after and v < p.fallback_replicas:
        clamps.append(
            Clamp(
                "fallback",
                v,
                p.fallback_replicas,
                f"metrics missing for {failures} decisions: keep at least the "
                f"fallback of {p.fallback_replicas}",
            )
        )
        v = p.fallback_replicas
    return v


def _stabilize(
    p: CompiledPolicy,
    history: tuple[tuple[float, int], ...],
    now: float,
    current: int,
    v: int,
    clamps: list[Clamp],
) -> tuple[int, tuple[tuple[float, int], ...]]:
    """Kubernetes stabilization: clamp(current, min of the up window, max of the down
    window), this recommendation included. Returns the count and the new history."""
    cutoff = now - p.history_span
    if not history:
        # No memory (first decision, or a restart): assume the current count was
        # recommended just now, as Kubernetes does, so a restart never drops replicas.
        history = ((now, current),)
    elif history[0][0] <= cutoff:
        history = tuple([h for h in history if h[0] > cutoff])
    up_cut = now - p.up.stabilization
    down_cut = now - p.down.stabilization
    up_rec = down_rec = v
    for t, rec in history:
        if t > up_cut and rec < up_rec:
            up_rec = rec
        if t > down_cut and rec > down_rec:
            down_rec = rec
    stable = min(max(current, up_rec), down_rec)
    if stable != v:
        span = p.up.stabilization if v > current else p.down.stabilization
        clamps.append(
            Clamp(
                "stabilization",
                v,
                stable,
                f"recommendations of the last {span:g}s range {up_rec}..{down_rec}",
            )
        )
    return stable, (*history, (now, v))


def _stabilize_no_behavior(
    p: CompiledPolicy,
    history: tuple[tuple[float, int], ...],
    now: float,
    current: int,
    v: int,
    clamps: list[Clamp],
) -> tuple[int, tuple[tuple[float, int], ...]]:
    """HPA without a behavior block: the highest recommendation of the scale-down
    window, this one included and the window's start too (HPA keeps a sample unless
    it is strictly older); no scale-up window and no clamp to the current count."""
    cutoff = now - p.down.stabilization
    if not history:
        history = ((now, current),)
    elif history[0][0] < cutoff:
        history = tuple([h for h in history if h[0] >= cutoff])
    stable = v
    for _, rec in history:
        if rec > stable:
            stable = rec
    if stable != v:
        clamps.append(
            Clamp(
                "stabilization",
                v,
                stable,
                f"highest recommendation of the last {p.down.stabilization:g}s is {stable}",
            )
        )
    return stable, (*history, (now, v))


def _cooldown(
    p: CompiledPolicy, state: State, now: float, current: int, v: int, clamps: list[Clamp]
) -> int:
    """No move in a direction within its cooldown of the last action (either way)."""
    cooldown = p.up.cooldown if v > current else p.down.cooldown
    if cooldown <= 0.0:
        return v
    stamps = [t for t in (state.last_up, state.last_down) if t is not None]
    if stamps and now - max(stamps) < cooldown:
        since = now - max(stamps)
        clamps.append(
            Clamp(
                "cooldown",
                v,
                current,
                f"last scaling action {since:g}s ago, cooldown {cooldown:g}s",
            )
        )
        return current
    return v


def _rate_limit(
    p: CompiledPolicy,
    events: tuple[tuple[float, int], ...],
    now: float,
    current: int,
    v: int,
    clamps: list[Clamp],
) -> int:
    """Kubernetes ``behavior.policies``: at most so much change per period."""
    if v > current and p.hpa_no_behavior:
        # HPA without behavior: int32(math.Max(2 * current, 4)) per decision.
        cap = int(max(2.0 * current, 4.0))
        if v > cap:
            why = f"HPA without behavior: at most max(2 x {current}, 4) = {cap}"
            clamps.append(Clamp("rate limit", v, cap, why))
            return cap
    elif v > current and p.up.disabled:
        clamps.append(Clamp("rate limit", v, current, "scale-up disabled (select: disabled)"))
        return current
    elif v < current and p.down.disabled:
        clamps.append(Clamp("rate limit", v, current, "scale-down disabled (select: disabled)"))
        return current
    elif v > current and p.up.limits:
        limit = _up_limit(p.up, events, now, current, p.hpa)
        if v > limit:
            clamps.append(Clamp("rate limit", v, limit, "scale-up rate limit"))
            return limit
    elif v < current and p.down.limits:
        limit = _down_limit(p.down, events, now, current, p.hpa)
        if v < limit:
            clamps.append(Clamp("rate limit", v, limit, "scale-down rate limit"))
            return limit
    return v


_HPA_NO_BEHAVIOR_NOTE = (
    "semantics: Kubernetes HPA without a behavior block (scale-up at most "
    f"max(2 x current, 4), highest recommendation of {HPA_DOWNSCALE_WINDOW:g}s)"
)
_HPA_BEHAVIOR_NOTE = (
    "semantics: Kubernetes HPA with its behavior block (HPA rounding of percent limits)"
)


def _hpa_note(p: CompiledPolicy) -> str:
    """The explain line that says which counting rules applied."""
    return _HPA_NO_BEHAVIOR_NOTE if p.hpa_no_behavior else _HPA_BEHAVIOR_NOTE


def _hpa_out_of_range(
    p: CompiledPolicy,
    state: State,
    now: float,
    bounds: tuple[int, int],
    active: tuple[str, ...],
    raw: int,
    results: tuple[CheckResult, ...],
    failures: int,
) -> Decision:
    """HPA's first branch: 0 replicas means autoscaling is off; a count outside
    [min, max] goes straight to the bound, before metrics, stabilization or limits
    (and without recording a recommendation)."""
    current = state.desired
    low, high = bounds
    clamps: tuple[Clamp, ...] = ()
    if current == 0:
        v = 0
        notes: tuple[str, ...] = ("HPA: the target has 0 replicas, autoscaling is off",)
    else:
        v = high if current > high else low
        stage = "max" if current > high else "min"
        why = f"HPA: the current count {current} is outside {low}..{high}, bound first"
        if active:
            why += f" ({', '.join(active)})"
        clamps = (Clamp(stage, current, v, why),)
        notes = ()
    notes = (*notes, _hpa_note(p))
    proposed = v
    if p.dry_run and v != current:
        notes = (*notes, f"dry run: would scale to {v}, keeping {current}")
        v = current
    last_up, last_down = state.last_up, state.last_down
    direction: Direction = "hold"
    events = state.events
    if v > current:
        direction, last_up = "up", now
    elif v < current:
        direction, last_down = "down", now
    if v != current and p.events_span > 0.0:
        events = (*events, (now, v - current))
    next_state = State(v, state.ready, last_up, last_down, state.recommendations, events, failures)
    return Decision(v, direction, current, raw, proposed, results, clamps, notes, next_state)


def decide(
    policy: ScalingPolicy | CompiledPolicy,
    obs: Observations,
    state: State,
    now: float,
    *,
    wall: float | None = None,
    outlook: Outlook | None = None,
) -> Decision:
    """Decide the desired replica count at time ``now`` and explain it.

    The controller and the simulator both call this, with the ``Decision.state``
    of the previous call (``with_ready`` refreshed) as ``state``. ``wall`` is the
    Unix time at ``now`` (schedules and events read it; default: ``now`` itself);
    ``outlook`` is the forecaster's answer for this decision, if the policy has one.
    """
    p = policy if isinstance(policy, CompiledPolicy) else policy.compiled
    current = state.desired
    views = view_windows(obs, p.metrics, now)
    low, high = p.min, p.max
    active: tuple[str, ...] = ()
    multiplier = 1.0
    if p.calendar is not None:
        bounds = p.calendar.bounds(now if wall is None else wall, low, high)
        low, high, active = bounds.min, bounds.max, bounds.active
        multiplier = bounds.multiplier
        if multiplier != 1.0:
            m = multiplier
            views = {
                k: None if w is None else (w[0], w[1], w[2], w[3], w[4] * m)
                for k, w in views.items()
            }
    window = obs.window
    results = tuple([c.evaluate(views[c.metric], state, now, window) for c in p.checks])
    missing = any(r.recommendation is None for r in results)
    failures = state.failures + 1 if missing else 0
    raw = combine(results, current, p.group_of) if results else current

    if p.paused:
        held = State(
            current,
            state.ready,
            state.last_up,
            state.last_down,
            state.recommendations,
            state.events,
            failures,
        )
        paused = ("paused: holding the current count",)
        return Decision(current, "hold", current, raw, current, results, (), paused, held)

    clamps: list[Clamp] = []
    v = raw
    if p.hpa and (current == 0 or not low <= current <= high):
        return _hpa_out_of_range(p, state, now, (low, high), active, raw, results, failures)
    if outlook is not None and outlook.replicas is not None:
        floor = outlook.replicas
        if multiplier != 1.0 and p.forecast is not None:
            floor = math.ceil(outlook.upper * multiplier / p.forecast.target - 1e-9)
        if floor > v:
            clamps.append(Clamp("forecast", v, floor, outlook.note.removeprefix("forecast: ")))
            v = floor
    if missing:
        v = _guard_missing(p, results, failures, current, v, clamps)
    history: tuple[tuple[float, int], ...] = ()
    if p.hpa_no_behavior:
        v, history = _stabilize_no_behavior(p, state.recommendations, now, current, v, clamps)
    elif p.history_span > 0.0:
        v, history = _stabilize(p, state.recommendations, now, current, v, clamps)
    if v != current:
        v = _cooldown(p, state, now, current, v, clamps)
    events = state.events
    if events and events[0][0] <= now - p.events_span:
        events = tuple([e for e in events if e[0] > now - p.events_span])
    if v != current:
        v = _rate_limit(p, events, now, current, v, clamps)
    if v > high:
        why = f"policy max is {high}" if high == p.max else f"max is {high} ({', '.join(active)})"
        clamps.append(Clamp("max", v, high, why))
        v = high
    elif v < low:
        why = f"policy min is {low}" if low == p.min else f"min is {low} ({', '.join(active)})"
        clamps.append(Clamp("min", v, low, why))
        v = low

    notes: tuple[str, ...] = ()
    if outlook is not None and not outlook.ready:
        notes = (outlook.note,)  # "too little history: reactive only"
    if p.hpa:
        notes = (*notes, _hpa_note(p))
    proposed = v
    if p.dry_run:
        change = f"would scale to {v}, keeping {current}" if v != current else "no change"
        notes = (*notes, f"dry run: {change}")
        v = current
    last_up, last_down = state.last_up, state.last_down
    direction: Direction = "hold"
    if v > current:
        direction, last_up = "up", now
    elif v < current:
        direction, last_down = "down", now
    if v != current and p.events_span > 0.0:
        events = (*events, (now, v - current))
    next_state = State(v, state.ready, last_up, last_down, history, events, failures)
    return Decision(v, direction, current, raw, proposed, results, tuple(clamps), notes, next_state)
