from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from skylift.plan.growth import Growth
from skylift.plan.roadmap import (
    CapacityFigures,
    Facts,
    PlanInputs,
    Prerequisite,
    build_plan,
    current_phase,
    next_phase_hosts,
    price_next_phase,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
CAP = CapacityFigures(45.0, 90.0, 2, NOW)


def inputs(**kw: object) -> PlanInputs:
    base: dict[str, object] = {
        "now": NOW,
        "service": "web",
        "facts": Facts(
            replicas=2,
            regions=1,
            autoscaling=False,
            prerequisites=[
                Prerequisite("replicas > 1", True, "2 ready"),
                Prerequisite("Redis sessions", None, "cannot see"),
                Prerequisite("backups", False, "none recorded"),
            ],
        ),
        "capacity": CAP,
        "peak_rps": 30.0,
        "growth": Growth(0.01, 0.008, 0.012, 40),
        "history_days": 40,
        "next_phase_cost": 120.0,
        "budget": 100.0,
    }
    base.update(kw)
    return PlanInputs(**base)  # type: ignore[arg-type]


def test_phase_from_what_runs() -> None:
    assert current_phase(Facts(1, 1, False)) == 0
    assert current_phase(Facts(3, 1, False)) == 1
    assert current_phase(Facts(1, 1, True)) == 1
    assert current_phase(Facts(2, 3, False)) == 2
    assert current_phase(Facts(2, 3, True)) == 3


def test_plan_names_the_limit_date_by_the_formula() -> None:
    plan = build_plan(inputs())
    assert plan["phase"] == 1
    days = math.log(90.0 / 30.0) / 0.01
    assert plan["limit"]["rps"] == 90.0
    assert plan["limit"]["days"] == round(days, 1)
    expected = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=days)).strftime("%Y-%m-%d")
    assert plan["limit"]["date"] == expected
    assert plan["limit"]["date_early"] < expected < plan["limit"]["date_late"]
    # faster growth, earlier date; more capacity, later date
    faster = build_plan(inputs(growth=Growth(0.02, 0.02, 0.02, 40)))["limit"]
    assert faster["days"] == round(math.log(3) / 0.02, 1)
    bigger = build_plan(inputs(capacity=CapacityFigures(45.0, 180.0, 4, NOW)))["limit"]
    assert bigger["days"] == round(math.log(6) / 0.01, 1)


def test_decision_points_carry_signals_and_thresholds() -> None:
    plan = build_plan(inputs())
    points = {d["name"]: d for d in plan["decision_points"]}
    start = points["start the next phase"]
    assert start["threshold"] == 9 * 30.0 and start["act"] is True  # 110 days < 270
    review = points["review phase 1 before committing to phase 2"]
    assert review["value"] == 50.0 and review["act"] is False
    cost = points["cost-benefit of the next phase"]
    assert (cost["value"], cost["threshold"], cost["act"]) == (120.0, 100.0, True)
    assert points["residency needs"]["value"] is None
    assert all(
        {"name", "signal", "value", "threshold"} <= d.keys() for d in plan["decision_points"]
    )
    assert plan["next_phase"]["months"] == [6.0, 9.0]


def test_missing_inputs_give_no_date_and_say_why() -> None:
    assert build_plan(inputs(capacity=None))["limit"]["date"] is None
    assert "capacity" in build_plan(inputs(capacity=None))["limit"]["reason"]
    assert "growing" in build_plan(inputs(growth=Growth(-0.01, -0.02, 0.0, 9)))["limit"]["reason"]
    overrun = build_plan(inputs(peak_rps=120.0))["limit"]
    assert overrun["days"] == 0.0 and overrun["date"] == "2026-01-01"


def test_plan_json_matches_the_committed_schema() -> None:
    import json
    from pathlib import Path

    import jsonschema  # type: ignore[import-untyped]

    schema = json.loads((Path(__file__).parents[3] / "docs" / "plan.schema.json").read_text())
    for plan in (build_plan(inputs()), build_plan(inputs(capacity=None, growth=None))):
        jsonschema.validate(json.loads(json.dumps(plan)), schema)


def test_next_phase_hosts_and_their_price() -> None:
    assert next_phase_hosts(1, 500.0, 100.0, 3)[0] == 1  # phase 1 stays on the one host
    assert next_phase_hosts(2, None, 100.0, 3)[0] == 3  # nothing measured: one per region
    assert next_phase_hosts(2, 250.0, 100.0, 3)[0] == 3  # 250 rps fits one host per region
    hosts, formula = next_phase_hosts(3, 700.0, 100.0, 3)
    assert hosts == 9 and "ceil(700.0 rps / (3 x 100.0 rps per host))" in formula
    monthly, basis = price_next_phase(9, formula, 0.0233, "cpx31", "hetzner-fsn1", "2024-06-01")
    assert monthly == round(9 * 0.0233 * 730, 2) and basis["hosts"] == 9
