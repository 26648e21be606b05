"""``skylift plan`` end to end: a running deployment (prerequisites detected from it), a
store seeded with the NASA trace's hourly history scaled to a known growth, and a stored
capacity result; the limit date follows days = ln(capacity / peak) / g. No load is sent."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from skylift.store import Store
from skylift.store.history import Bucket
from tests.e2e.harness import Deployment, wait_for, web_service

Deploy = Callable[..., Deployment]
DATA = Path(__file__).parent / "data" / "nasa_hourly.csv"
SCHEMA = Path(__file__).parents[2] / "docs" / "plan.schema.json"
DAY = 86400.0


def nasa_history(growth: float, scale: float, now: float) -> list[Bucket]:
    """The trace's hours ending now, as req/s buckets, times exp(growth * day)."""
    rows = [
        tuple(int(x) for x in line.split(","))
        for line in DATA.read_text().splitlines()
        if line and line[0].isdigit()
    ]
    last = rows[-1][0]
    start = (now // 3600 - last - 1) * 3600
    out = []
    for hour, requests in rows:
        t = start + hour * 3600
        rps = requests / 3600.0 * scale * math.exp(growth * hour / 24.0)
        out.append(Bucket(t, 3600.0, rps * 60, 60))
    return out


def seed(d: Deployment, growth: float, scale: float = 1.0, host_rps: float = 90.0) -> None:
    url = f"sqlite:///{d.state_dir / 'skylift.db'}"
    with Store.open(url, state_dir=d.state_dir) as store:
        store.history.prune(time.time() + DAY)  # replace what an earlier seed wrote
        store.history.append("web", "rps", nasa_history(growth, scale, time.time()))
    result = {
        "max_rps_per_replica": 45.0,
        "max_rps_per_host": host_rps,
        "replicas_per_host": 2,
        "measured_at": time.time(),
    }
    path = d.state_dir / "capacity" / "web.jsonl"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(result) + "\n")


def plan(d: Deployment, *extra: str) -> dict[str, Any]:
    return json.loads(d.cli("plan", "-o", "json", *extra).stdout)  # type: ignore[no-any-return]


def check_formula(p: dict[str, Any]) -> float:
    lim = p["limit"]
    days = float(math.log(lim["rps"] / lim["peak_rps"]) / lim["growth_per_day"])
    assert lim["days"] == round(days, 1)
    generated = datetime.fromisoformat(p["generated_at"])
    assert lim["date"] == (generated + timedelta(days=days)).astimezone(UTC).strftime("%Y-%m-%d")
    return days


def test_plan_from_a_running_deployment_and_nasa_history(deploy: Deploy, tmp_path: Path) -> None:
    svc = web_service(replicas=2)
    svc["backend"]["env"] = {"REDIS_URL": "redis://127.0.0.1:1/0"}  # seen by name only
    d = deploy({"web": svc})
    d.up()
    seed(d, growth=0.02)
    out = tmp_path / "plan.html"
    p = plan(d, "--next-phase-cost", "400", "--budget", "300", "--html", str(out))
    jsonschema.validate(p, json.loads(SCHEMA.read_text()))
    assert p["phase"] == 1
    pre = {x["name"]: x for x in p["prerequisites"]}
    assert pre["replicas > 1"]["met"] is True and "2 ready" in pre["replicas > 1"]["evidence"]
    assert pre["health checks"]["met"] is True
    assert pre["Redis sessions"]["met"] is True and "REDIS_URL" in pre["Redis sessions"]["evidence"]
    assert "redis://" not in json.dumps(p)  # names, never values
    assert pre["pooled database"]["met"] is None
    assert pre["backups"]["met"] is False
    assert pre["regions"]["met"] is False and pre["autoscaling"]["met"] is False
    growth = p["traffic"]["growth"]
    assert growth["per_day_low"] < growth["per_day"] < growth["per_day_high"]
    assert 0.01 < growth["per_day"] < 0.035  # 0.02 injected on top of the trace's own trend
    assert p["limit"]["rps"] == 90.0 and p["limit"]["date"] is not None
    days = check_formula(p)
    points = {x["name"]: x for x in p["decision_points"]}
    assert points["cost-benefit of the next phase"]["act"] is True
    assert points["start the next phase"]["value"] == p["limit"]["days"]
    html = out.read_text()
    assert html.count("<svg") == 2 and p["limit"]["date"] in html and "<script" not in html

    # faster growth: an earlier date; more capacity: a later one (same formula)
    seed(d, growth=0.04)
    faster = check_formula(plan(d))
    assert faster < days
    seed(d, growth=0.04, host_rps=180.0)
    prices = Path(__file__).resolve().parents[2] / "examples" / "prices.yaml"
    bigger = plan(d, "--prices", str(prices), "--instance", "hetzner-fsn1/cpx31")
    jsonschema.validate(bigger, json.loads(SCHEMA.read_text()))
    assert check_formula(bigger) > faster
    assert bigger["limit"]["rps"] == 180.0
    # the next phase (regions) priced from the price file: 3 regions, hosts for the peak
    basis = bigger["next_phase"]["cost_basis"]
    hosts = 3 * max(1, math.ceil(bigger["traffic"]["peak_rps"] / (3 * 180.0)))
    assert (basis["hosts"], basis["instance"], basis["hourly"]) == (hosts, "cpx31", 0.0233)
    assert bigger["next_phase"]["monthly_cost"] == round(hosts * 0.0233 * 730, 2)

    # prerequisites follow the deployment, not the config: one replica now
    d.cli("scale", "web", "1")
    wait_for(lambda: len(d.service()["replicas"]) == 1, 30, "one replica left")
    one = {x["name"]: x for x in plan(d)["prerequisites"]}
    assert one["replicas > 1"]["met"] is False
