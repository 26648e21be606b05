"""Replay a trace against a policy through the engine's own ``decide``.

The clock advances in ticks of gcd(trace step, decision interval) seconds. At
each tick: decide (every ``interval``), start or stop replicas, promote booted
replicas to ready, then serve the tick's load and record one metric sample,
stamped at the tick's end. Ticks inside a trace gap record no sample (the
engine sees the metrics as missing) and do not count in the elasticity scores,
but the replicas running through them are still paid for.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Literal

from skylift.engine import CompiledPolicy, Observations, ScalingPolicy, Series, State, decide
from skylift.engine.predictive import Forecaster
from skylift.sim.disrupt import SpendCap, SpotInterruptions
from skylift.sim.result import SimResult, Timeline
from skylift.sim.service import LN20, ServiceModel
from skylift.sim.trace import Trace

Progress = Callable[[int], None]
"""Called with the number of trace rows done, every few thousand rows."""
PROGRESS_EVERY = 8192
MEMORY_BASE = 0.3
MEMORY_PER_LOAD = 0.4
"""Toy memory model: 30% at idle plus 40% of the utilisation (80% at 125% load)."""


def _tick(step: int, interval: float) -> int:
    if not float(interval).is_integer() or interval <= 0:
        raise ValueError(f"the simulator needs a whole-second interval, got {interval:g}s")
    return math.gcd(step, int(interval))


def simulate(
    trace: Trace,
    policy: ScalingPolicy | CompiledPolicy | Literal["oracle"],
    model: ServiceModel,
    *,
    interval: float | None = None,
    window: float = 60.0,
    name: str | None = None,
    progress: Progress | None = None,
    epoch: float = 0.0,
    forecaster: Forecaster | None = None,
    spot: SpotInterruptions | None = None,
    spend_cap: SpendCap | None = None,
) -> SimResult:
    """Replay ``trace``; ``interval`` overrides the policy's decision interval.

    ``epoch`` is the Unix time of the trace's t = 0: the virtual wall clock that
    schedules, events and the forecaster's seasons read is ``epoch + t``.
    ``forecaster`` replaces the one the policy's ``forecast:`` block would build
    (benchmarks pass a clairvoyant one to measure what a perfect forecast costs).
    ``spot`` reclaims replicas of the spot share (replaced after ``startup``, so the
    SLO pays for them); ``spend_cap`` holds the fleet down once a month's budget is spent.
    """
    if policy == "oracle":
        return simulate_oracle(trace, model, interval=interval or 15.0)
    compiled = policy.compiled if isinstance(policy, ScalingPolicy) else policy
    interval_s = float(interval if interval is not None else compiled.interval)
    step = trace.step
    tick = _tick(step, interval_s)
    per_decision = int(interval_s) // tick
    ticks_per_row = step // tick
    cap = model.capacity
    mu = model.service_rate
    timeout = model.timeout
    min_spare = LN20 / timeout
    startup = model.startup

    cf = compiled.forecast
    if forecaster is None and cf is not None:
        forecaster = Forecaster(cf, interval_s, startup)
    if forecaster is not None and cf is None:
        raise ValueError("a forecaster needs a policy with a forecast: block")
    need = compiled.metrics
    if cf is not None and cf.metric not in need:
        need = (*need, cf.metric)
    sample_t: list[float] = []
    columns: dict[str, list[float]] = {m: [] for m in need}
    obs = Observations(window, **{m: Series(sample_t, columns[m]) for m in need})
    cpu_v = columns.get("cpu")
    mem_v = columns.get("memory")
    rps_v = columns.get("rps")
    conn_v = columns.get("connections")
    p95_v = columns.get("p95_latency")
    queue_v = columns.get("queue")
    forecast_series = getattr(obs, cf.metric) if cf is not None else None

    times = trace.times
    requests = trace.requests
    start = min(max(model.demand(requests[0] / step), compiled.min), compiled.max)
    ready = desired = start
    pending: deque[float] = deque()
    leaving: deque[tuple[float, int]] = deque()
    """Spot replicas under a reclaim notice: (when the machine goes, replicas on it)."""
    state = State(start, start)
    timeline = Timeline()
    tl_t, tl_rate, tl_dem = timeline.t, timeline.rate, timeline.demand
    tl_des, tl_ready, tl_paid = timeline.desired, timeline.ready, timeline.paid

    clock = times[0]
    countdown = 0
    decisions = actions = 0
    cost_ticks = oracle_ticks = 0
    under = over = 0.0
    under_n = over_n = observed = 0
    supply_changes = demand_changes = 0
    last_ready = start
    last_demand = model.demand(requests[0] / step)

    for i in range(len(times)):
        t_row = times[i]
        rate = requests[i] / step
        dem = max(1, math.ceil(rate / cap - 1e-9))
        n_gap = (t_row - clock) // tick
        row_paid = 0
        for k in range(n_gap + ticks_per_row):
            now = float(clock)
            if countdown == 0:
                countdown = per_decision
                if ready != state.ready:
                    state = state.with_ready(ready)
                if forecaster is None:
                    decision = decide(compiled, obs, state, now, wall=epoch + now)
                else:
                    outlook = forecaster.advance(forecast_series, now, epoch + now)
                    decision = decide(compiled, obs, state, now, wall=epoch + now, outlook=outlook)
                decisions += 1
                state = decision.state
                new = decision.desired
                if spend_cap is not None:
                    new = spend_cap.allowed(now, new)
                if new != desired:
                    actions += 1
                    if new > desired:
                        pending.extend([now + startup] * (new - desired))
                    else:
                        drop = desired - new
                        while drop and pending:
                            pending.pop()
                            drop -= 1
                        ready -= drop
                        if leaving:
                            # Replicas under a reclaim notice go anyway, so the drop takes
                            # the others; only what it needs beyond them stops noticed ones
                            # early (their reclaim then finds nothing to take).
                            early = drop - (ready + drop - sum(n for _, n in leaving))
                            while early > 0 and leaving:
                                at, n = leaving.pop()
                                if n > early:
                                    leaving.append((at, n - early))
                                early -= min(n, early)
                    desired = new
            countdown -= 1
            while pending and pending[0] <= now:
                pending.popleft()
                ready += 1
            while leaving and leaving[0][0] <= now:
                ready -= min(leaving.popleft()[1], ready)
            paid = ready + len(pending)
            if spot is not None:
                lost = min(spot.lost(paid, tick), ready)
                if lost:
                    # the replacement starts now; without notice the replicas go now,
                    # with one they serve until the provider takes the machine
                    pending.extend([now + startup] * lost)
                    if spot.notice > 0:
                        leaving.append((now + spot.notice, lost))
                    else:
                        ready -= lost
            if spend_cap is not None:
                spend_cap.pay(now, paid, tick)
            cost_ticks += paid
            row_paid += paid
            clock += tick
            if k < n_gap:
                oracle_ticks += last_demand
                continue
            # Serve [now, now + tick) and record what the collectors would see.
            # No ready replica (all reclaimed): nothing to measure, the metrics go missing.
            if ready:
                per = rate / ready
                sample_t.append(now + tick)
                util = per / cap
                if cpu_v is not None:
                    cpu_v.append(util)
                if mem_v is not None:
                    mem_v.append(MEMORY_BASE + MEMORY_PER_LOAD * util)
                if rps_v is not None:
                    rps_v.append(rate)
                if p95_v is not None or conn_v is not None or queue_v is not None:
                    spare = mu - per
                    rho = per / mu
                    if p95_v is not None:
                        p95_v.append(LN20 / spare if spare > min_spare else timeout)
                    if conn_v is not None:
                        conn_v.append(ready * rho / (1.0 - rho) if rho < 1.0 else rate * timeout)
                    if queue_v is not None:
                        queue_v.append(
                            ready * rho * rho / (1.0 - rho) if rho < 1.0 else rate * timeout
                        )
            observed += 1
            oracle_ticks += dem
            if ready < dem:
                under += (dem - ready) / dem
                under_n += 1
            elif ready > dem:
                over += (ready - dem) / dem
                over_n += 1
            if ready != last_ready:
                supply_changes += 1
                last_ready = ready
            if dem != last_demand:
                demand_changes += 1
                last_demand = dem
        tl_t.append(t_row)
        tl_rate.append(rate)
        tl_dem.append(dem)
        tl_des.append(desired)
        tl_ready.append(ready)
        tl_paid.append(row_paid / ticks_per_row)
        if progress is not None and i % PROGRESS_EVERY == 0:
            progress(i)

    return _result(
        name or "policy",
        trace,
        model,
        interval_s,
        tick,
        observed,
        under,
        over,
        under_n,
        over_n,
        supply_changes - demand_changes,
        cost_ticks,
        oracle_ticks,
        actions,
        decisions,
        timeline,
        forecaster.stats().to_dict() if forecaster is not None else None,
        spot.interruptions if spot is not None else None,
    )


def simulate_oracle(trace: Trace, model: ServiceModel, *, interval: float = 15.0) -> SimResult:
    """Supply == demand at every tick, with no start-up delay: the physical limit."""
    step = trace.step
    tick = _tick(step, interval)
    ticks_per_row = step // tick
    timeline = Timeline()
    clock = trace.times[0]
    last = model.demand(trace.requests[0] / step)
    cost_ticks = observed = actions = 0
    for t_row, count in zip(trace.times, trace.requests, strict=True):
        dem = model.demand(count / step)
        n_gap = (t_row - clock) // tick
        cost_ticks += n_gap * last + ticks_per_row * dem
        timeline.paid.append((n_gap * last + ticks_per_row * dem) / ticks_per_row)
        observed += ticks_per_row
        clock = t_row + step
        if dem != last:
            actions += 1
            last = dem
        timeline.t.append(t_row)
        timeline.rate.append(count / step)
        timeline.demand.append(dem)
        timeline.desired.append(dem)
        timeline.ready.append(dem)
    return _result(
        "oracle",
        trace,
        model,
        float(interval),
        tick,
        observed,
        0.0,
        0.0,
        0,
        0,
        0,
        cost_ticks,
        cost_ticks,
        actions,
        0,
        timeline,
    )


def _result(
    name: str,
    trace: Trace,
    model: ServiceModel,
    interval: float,
    tick: int,
    observed: int,
    under: float,
    over: float,
    under_n: int,
    over_n: int,
    jitter_changes: int,
    cost_ticks: int,
    oracle_ticks: int,
    actions: int,
    decisions: int,
    timeline: Timeline,
    forecast: dict[str, float | int] | None = None,
    interruptions: int | None = None,
) -> SimResult:
    share = 100.0 / observed if observed else 0.0
    observed_hours = observed * tick / 3600.0
    return SimResult(
        policy=name,
        trace=trace.name,
        capacity_rps=model.capacity,
        startup_s=model.startup,
        interval_s=interval,
        theta_u_pct=under * share,
        theta_o_pct=over * share,
        tau_u_pct=under_n * share,
        tau_o_pct=over_n * share,
        jitter_per_hour=jitter_changes / observed_hours if observed_hours else 0.0,
        replica_hours=cost_ticks * tick / 3600.0,
        oracle_replica_hours=oracle_ticks * tick / 3600.0,
        # M/M/1 sized so that p95 > SLO exactly when load/replica > capacity, i.e. ready < demand.
        slo_violation_minutes=under_n * tick / 60.0,
        actions=actions,
        decisions=decisions,
        observed_hours=observed_hours,
        timeline=timeline,
        forecast=forecast,
        spot_interruptions=interruptions,
    )
