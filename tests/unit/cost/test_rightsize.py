"""Right-sizing from p95 usage, and a bigger host against more hosts, priced per month."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skylift.cli.cost import register
from skylift.config import load_config
from skylift.cost.model import CostError
from skylift.cost.prices import HOURS_PER_MONTH, load_prices
from skylift.cost.rightsize import percentile, rightsize, vertical_or_horizontal
from skylift.store import Store
from skylift.store.history import Bucket

REPO = Path(__file__).resolve().parents[3]
PRICES = load_prices(REPO / "examples" / "prices.yaml")
MI = 2**20
CONFIG = """
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 1
    resources: {cpu: 1, memory: 1Gi}
    backend: {command: "app --port {port}"}
"""


def test_p95_plus_headroom_rounded_up_and_types_by_price_per_replica() -> None:
    cpu = [0.1] * 95 + [2.0] * 5  # a 5 % spike does not size the request
    memory = [400 * MI] * 100
    advice = rightsize(cpu, memory, PRICES, headroom=0.15)
    assert percentile(cpu, 95) == 0.1
    assert advice.cpu == pytest.approx(0.15)  # 0.115 rounded up to 50m
    assert advice.memory == 512 * MI  # 460 MiB rounded up to 64 MiB
    prices = [f.usd_per_replica_month for f in advice.fits]
    assert prices == sorted(prices)
    best = advice.fits[0]
    # 8 cores / 0.15 = 53 replicas (memory would hold 64): the big type packs best
    assert best.instance == "aws-us-east-1/m7i.2xlarge" and best.per_instance == 53
    assert best.usd_per_replica_month == pytest.approx(0.4032 * HOURS_PER_MONTH / 53)
    small = next(f for f in advice.fits if f.instance.endswith("c7i.large"))
    assert small.per_instance == 8  # 4Gi / 512Mi: memory binds
    with pytest.raises(CostError, match="no samples"):
        rightsize([], [], PRICES)


def test_vertical_or_horizontal_on_a_vps() -> None:
    options = vertical_or_horizontal(PRICES, "hetzner-fsn1/cpx21", 400.0, 1000.0)
    by_way = {o.way: o for o in options}
    assert by_way["horizontal"].hosts == 3 and by_way["horizontal"].capacity_rps == 1200.0
    # cpx41 (8 cores) is the cheapest type whose cores x (400 / 3) rps reach 1000
    assert by_way["vertical"].instance == "hetzner-fsn1/cpx41"
    assert by_way["vertical"].usd_month == pytest.approx(0.0434 * HOURS_PER_MONTH)
    assert options[0].usd_month <= options[1].usd_month and options[-1].way == "stay"
    assert by_way["stay"].note == "short of the need"


def test_with_a_request_more_replicas_on_the_host_come_first() -> None:
    """One replica of 0.5 core serves 300 rps on a 3-core cpx21 (4 GiB): 6 fit by
    cores, 8 by memory; 3 of them carry 900 rps at no new money."""
    options = vertical_or_horizontal(
        PRICES, "hetzner-fsn1/cpx21", 300.0, 800.0, replicas=1, request=(0.5, 512 * MI)
    )
    first = options[0]
    assert first.way == "replicas" and first.capacity_rps == pytest.approx(900.0)
    assert first.usd_month == pytest.approx(0.0126 * HOURS_PER_MONTH)
    by_way = {o.way: o for o in options}
    # a full cpx21 (6 x 0.5 core) carries 1800 rps: two of them are the horizontal step
    assert by_way["horizontal"].hosts == 2 and by_way["horizontal"].capacity_rps == 3600.0
    # 600 rps per core in use: the 4-core cpx31 carries 2400
    assert by_way["vertical"].instance == "hetzner-fsn1/cpx31"
    assert by_way["vertical"].capacity_rps == pytest.approx(2400.0)


def test_cli_sizes_from_the_stores_history(tmp_path: Path) -> None:
    config = tmp_path / "skylift.yaml"
    config.write_text(CONFIG)
    loaded = load_config(config, environ={})
    now = time.time()
    with Store.open(loaded.store_url, state_dir=loaded.state_dir) as store:
        # fractions of the request (1 core, 1 GiB), 60 one-minute buckets
        store.history.append(
            "web", "cpu", [Bucket(now - 3600 + 60 * i, 60, 0.3 * 12, 12) for i in range(60)]
        )
        store.history.append(
            "web", "memory", [Bucket(now - 3600 + 60 * i, 60, 0.25 * 12, 12) for i in range(60)]
        )
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    args = ["rightsize", "web", "-c", str(config), "--prices", str(REPO / "examples/prices.yaml")]
    out = runner.invoke(app, [*args, "-o", "json", "--window", "2h"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)["rightsize"]
    assert data["cpu"] == "350m" and data["memory"] == "320Mi"  # 0.3 core / 256 MiB + 15 %
    assert data["samples"] == 60
    empty = runner.invoke(app, [*args, "--window", "1m"])  # nothing stored that recently
    assert empty.exit_code == 1 and "--samples" in empty.output


def test_cli_from_samples_with_advice(tmp_path: Path) -> None:
    samples = tmp_path / "web.csv"
    samples.write_text("t,cpu,memory\n" + "".join(f"{i},0.2,300Mi\n" for i in range(20)))
    app = typer.Typer()
    register(app)
    args = ["rightsize", "--samples", str(samples), "--prices", str(REPO / "examples/prices.yaml")]
    out = CliRunner().invoke(
        app, [*args, "--capacity", "400", "--need", "1000", "--instance", "hetzner-fsn1/cpx21"]
    )
    assert out.exit_code == 0, out.output
    # request 250m / 384Mi (p95 0.2 core, 300Mi + 15 %): 10 fit on a cpx21 (memory binds);
    # today's replica does 400 rps on 0.25 core, so 3 replicas on the same host carry 1000
    assert "3 replicas on today's host (room for 10)" in out.stdout
    assert out.stdout.splitlines()[-4].split()[:4] == ["replicas", "1", "x", "hetzner-fsn1/cpx21"]
    half = CliRunner().invoke(app, [*args, "--capacity", "400"])
    assert half.exit_code == 2 and "--need" in half.output
