"""The cost model: packing, pricing by kind, the reserved baseline search, spot, the cap."""

from __future__ import annotations

import random

import pytest

from skylift.cost.model import (
    CostError,
    Mix,
    Rates,
    fleet_hours,
    level_above,
    per_instance,
    price,
    reserved_search,
)
from skylift.cost.plan import plan_costs
from skylift.cost.prices import InstanceType
from skylift.sim import ServiceModel, parse_trace, preset_policy, simulate
from skylift.sim.disrupt import SpendCap, SpotInterruptions
from skylift.sim.result import SimResult

GI = 2**30


def _levels_trace(levels: list[int]) -> str:
    return "t,requests\n" + "".join(f"{i * 60},{n * 10 * 60}\n" for i, n in enumerate(levels))


def test_packing_by_declared_requests() -> None:
    m = InstanceType.model_validate({"cores": 2, "memory": "8Gi", "on_demand": 0.1})
    assert per_instance(m, 0.5, 1 * GI) == 4  # cores bind
    assert per_instance(m, 0.25, 3 * GI) == 2  # memory binds
    with pytest.raises(CostError, match="bigger type"):
        per_instance(m, 4, GI, "m")


@pytest.mark.parametrize(("ratio", "best"), [(0.625, 38), (0.2, 80), (0.995, 1), (0.001, 100)])
def test_reserved_search_matches_the_closed_form(ratio: float, best: int) -> None:
    """Demand held at each level 1..100 for equal time (in shuffled order): the level
    r is held (101 - r) % of the time, so reserving r + 1 pays iff (100 - r) % > the
    reserved / on-demand ratio: R* = the largest r with 101 - r > 100 * ratio."""
    levels = list(range(1, 101))
    random.Random(7).shuffle(levels)
    oracle = simulate(parse_trace(_levels_trace(levels), "levels"), "oracle", ServiceModel(10.0))
    rows = fleet_hours(oracle.timeline.t, oracle.timeline.paid, 60, 1)
    line = reserved_search(rows, reserved=ratio, burst=1.0)
    assert line.instances == best
    assert line.instances == max(r for r in levels if 101 - r > 100 * ratio)
    assert line.breakeven_pct == pytest.approx(100 * ratio)
    assert line.above_pct == pytest.approx(101 - best)
    assert level_above(rows, 101 - best) == best
    # and it is the cheapest: one more or one fewer costs more
    rates = Rates(on_demand=1.0, reserved=ratio)
    at = price(rows, rates, Mix(reserved=best)).usd
    for other in (best - 1, best + 1):
        assert price(rows, rates, Mix(reserved=other)).usd > at - 1e-9


def test_price_by_kind_sums_and_matches_paid() -> None:
    rows = [(10.0, 1.0), (2.0, 3.0)]  # 10 instances for 1 h, 2 for 3 h
    rates = Rates(on_demand=1.0, reserved=0.6, spot=0.3)
    cost = price(rows, rates, Mix(reserved=2, spot_share=0.5))
    assert cost.reserved == pytest.approx(2 * 4 * 0.6)
    assert cost.on_demand == pytest.approx(0.5 * 8 * 1.0)
    assert cost.spot == pytest.approx(0.5 * 8 * 0.3)
    assert cost.to_dict()["usd"] == pytest.approx(round(cost.usd, 2))
    assert price(rows, rates, Mix()).usd == pytest.approx(16.0)


def test_spot_interruptions_follow_the_rate_and_the_seed() -> None:
    def run(seed: int) -> int:
        spot = SpotInterruptions(
            reserved=0, share=1.0, per_instance=1, rate_per_hour=0.05, seed=seed
        )
        lost = sum(spot.lost(10, 60.0) for _ in range(60 * 1000))  # 10 instances, 1000 h
        assert lost == spot.interruptions
        return lost

    assert run(1) == run(1)
    assert 420 < run(1) < 580 and 420 < run(2) < 580  # expected 500, sd 22
    idle = SpotInterruptions(reserved=10, share=1.0, per_instance=1, rate_per_hour=0.05)
    assert sum(idle.lost(10, 60.0) for _ in range(60 * 100)) == 0  # all on reserved


def _burst_trace() -> str:
    rates = [20] * 60 + [70] * 240 + [20] * 60
    return "t,requests\n" + "".join(f"{i * 60},{r * 60}\n" for i, r in enumerate(rates))


def test_reclaimed_replicas_come_back_after_the_startup_and_cost_slo() -> None:
    trace = parse_trace(_burst_trace(), "burst")
    model = ServiceModel(capacity=10.0, startup=120.0)
    policy = preset_policy("hpa", 10.0, 7)
    calm = simulate(trace, policy, model)
    spot = SpotInterruptions(reserved=0, share=1.0, per_instance=2, rate_per_hour=0.5, seed=3)
    hit = simulate(trace, policy, model, spot=spot)
    assert spot.interruptions > 0 and hit.spot_interruptions == spot.interruptions
    assert hit.slo_violation_minutes > calm.slo_violation_minutes
    # the replacement is paid while it starts: paid stays >= ready, and dips in ready heal
    assert all(p >= r for p, r in zip(hit.timeline.paid, hit.timeline.ready, strict=True))
    assert hit.timeline.ready[-1] >= calm.timeline.ready[-1] - 2


def test_plan_picks_the_cheapest_mix_within_the_slo_and_prices_a_cap() -> None:
    trace = parse_trace(_burst_trace(), "burst")
    model = ServiceModel(capacity=10.0, startup=120.0)
    policy = preset_policy("hpa", 10.0, 7)

    def replay(spot: SpotInterruptions | None, cap: SpendCap | None) -> SimResult:
        return simulate(trace, policy, model, spot=spot, spend_cap=cap)

    rates = Rates(on_demand=1.0, reserved=0.6, spot=0.3, interruption_rate=0.05)
    plan = plan_costs(replay(None, None), trace, rates, 1, replay, monthly_cap=3.0)
    runs = [plan.on_demand, plan.reserved, *plan.spot]
    keeping = [r for r in runs if r is not None and r.slo_minutes <= plan.slo_budget]
    assert plan.cheapest.cost.usd == min(r.cost.usd for r in keeping)
    assert plan.reserved is not None and plan.reserved.cost.usd <= plan.on_demand.cost.usd
    assert plan.cap is not None and plan.cap.capped_hours > 0
    assert plan.cap.extra_slo_minutes > 0  # a 3 USD month cannot pay for the burst
    assert plan.cap.run.cost.usd < plan.cheapest.cost.usd


def test_a_reclaim_notice_longer_than_the_startup_hides_the_loss() -> None:
    trace = parse_trace(_burst_trace(), "burst")
    model = ServiceModel(capacity=10.0, startup=60.0)
    policy = preset_policy("hpa", 10.0, 7)
    calm = simulate(trace, policy, model)

    def hit(notice: float) -> SimResult:
        spot = SpotInterruptions(0, 1.0, per_instance=2, rate_per_hour=0.5, seed=3, notice=notice)
        return simulate(trace, policy, model, spot=spot)

    sudden, warned = hit(0.0), hit(120.0)
    assert sudden.spot_interruptions and warned.spot_interruptions
    assert sudden.slo_violation_minutes > calm.slo_violation_minutes
    assert warned.slo_violation_minutes <= calm.slo_violation_minutes
    assert warned.replica_hours > sudden.replica_hours  # the overlap is billed
    # ... and only the overlap: ready is back at desired once each notice ends, and
    # scale-downs during a notice leave no replica behind
    tl = warned.timeline
    above = sum(1 for r, d in zip(tl.ready, tl.desired, strict=True) if r > d)
    assert above < 0.05 * len(tl.t) and tl.ready[-1] == tl.desired[-1]
    assert min(warned.timeline.ready[60:300]) >= min(calm.timeline.ready[60:300])
