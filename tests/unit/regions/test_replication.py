"""The pure side of opt-in replication: names, pairs, SQL and the decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylift.regions import replication as r
from skylift.regions.rules import RegionFacts, Topology


def topology(*regions: tuple[str, str]) -> Topology:
    return Topology(tuple(RegionFacts(name, zone) for name, zone in regions), regions[0][0])


WORLD = topology(("us", "us"), ("eu-west", "eu"), ("eu-central", "eu"), ("asia", "asia"))


def test_names_are_safe_identifiers() -> None:
    assert r.publication_name("eu-west") == "skylift_xr_to_eu_west"
    assert r.subscription_name("eu-west", "us") == "skylift_xr_eu_west_to_us"
    assert r.copy_database("eu-central") == "skylift_copy_eu_central"
    assert r.ident("EU.West 1") == "eu_west_1"
    with pytest.raises(r.ReplicationError, match="longer than"):
        r.subscription_name("a" * 30, "b" * 30)


def test_pairs_cross_zones_only() -> None:
    pairs = r.pairs(WORLD)
    assert {p.key for p in pairs if p.fallback == "us"} == {
        "eu-west->us",
        "eu-central->us",
        "asia->us",
    }
    assert {p.key for p in r.pairs(WORLD, fallback="eu-west")} == {"us->eu-west", "asia->eu-west"}
    assert all(WORLD.zone_of(p.home) != WORLD.zone_of(p.fallback) for p in pairs)
    assert len(pairs) == 10  # us 3, asia 3, each EU region 2
    assert r.pairs(topology(("a", "z"), ("b", "z"))) == []


def test_names_that_collide_are_refused() -> None:
    with pytest.raises(r.ReplicationError, match="'eu-west' and 'eu_west'"):
        r.pairs(topology(("eu-west", "eu"), ("eu_west", "x")))


def test_row_filter_as_postgres_prints_it() -> None:
    assert r.row_filter("us") == "(xr_target = 'us'::text)"
    assert r.quote_literal("o'k") == "'o''k'"


def test_urls() -> None:
    url = "postgresql+psycopg://skylift@10.0.0.1:5432/platform?sslmode=require"
    assert r.with_database(url, "skylift_copy_eu_west") == (
        "postgresql://skylift@10.0.0.1:5432/skylift_copy_eu_west?sslmode=require"
    )
    assert (
        r.publisher_conninfo(url) == "postgresql://skylift@10.0.0.1:5432/platform?sslmode=require"
    )
    assert r.owner_url("p", "s", promoted_to_standby=False) == "p"
    assert r.owner_url("p", "s", promoted_to_standby=True) == "s"
    assert r.owner_url("p", None, promoted_to_standby=True) == "p"


def test_subscription_decisions() -> None:
    facts = r.SubscriptionFacts("postgresql://a/platform", enabled=True)
    assert r.decide_subscription(None, "postgresql://a/platform") == "create"
    assert r.decide_subscription(facts, "postgresql://a/platform") == "ok"
    assert r.decide_subscription(facts, "postgresql://b/platform") == "resync"  # promoted
    disabled = r.SubscriptionFacts("postgresql://a/platform", enabled=False)
    assert r.decide_subscription(disabled, "postgresql://a/platform") == "enable"


def test_publisher_problems_name_the_fix() -> None:
    assert r.publisher_problem("eu-west", "logical", r.IDENTITY_INDEX) is None
    wal = r.publisher_problem("eu-west", "replica", r.IDENTITY_INDEX)
    assert wal is not None and "wal_level = logical" in wal and "eu-west" in wal
    table = r.publisher_problem("eu-west", "logical", None)
    assert table is not None and "no users table" in table
    for before_p0005 in ("d", "f"):  # default (primary key) or p0004's whole row
        identity = r.publisher_problem("eu-west", "logical", before_p0005)
        assert identity is not None and "p0005_copy_columns" in identity


def test_the_password_hash_is_never_published() -> None:
    columns = [("id", "uuid", True), ("password_hash", "text", True), ("xr_target", "text", True)]
    assert r.published_columns(columns) == [("id", "uuid", True), ("xr_target", "text", True)]


def test_copy_table_follows_the_publisher() -> None:
    columns = [("id", "uuid", True), ("email", "text", True), ("display_name", "text", False)]
    assert r.copy_table_sql(columns) == (
        'CREATE TABLE IF NOT EXISTS users ("id" uuid NOT NULL PRIMARY KEY, '
        '"email" text NOT NULL, "display_name" text)'
    )
    assert r.missing_columns_sql(columns, {"id": "uuid", "email": "text"}) == [
        'ALTER TABLE users ADD COLUMN IF NOT EXISTS "display_name" text'
    ]
    assert r.missing_columns_sql(columns, dict.fromkeys(("id", "email", "display_name"), "")) == []
    with pytest.raises(r.ReplicationError):
        r.copy_table_sql([])


def test_subscription_state() -> None:
    assert r.subscription_state(False, False, False, []) == "missing"
    assert r.subscription_state(True, False, False, ["r"]) == "disabled"
    assert r.subscription_state(True, True, False, ["r"]) == "error"
    assert r.subscription_state(True, True, True, ["d"]) == "copying"
    assert r.subscription_state(True, True, True, ["r"]) == "streaming"


def test_status_shapes() -> None:
    row = r.PairStatus("eu-west", "us", "streaming", 3, 0, 0.0, "postgresql://h/platform")
    assert row.as_dict() == {
        "home": "eu-west",
        "fallback": "us",
        "state": "streaming",
        "rows": 3,
        "lag_bytes": 0,
        "lag_seconds": 0.0,
        "publisher": "postgresql://h/platform",
    }
    broken = r.PairStatus("asia", "us", "error", error="asia: connection refused")
    assert broken.as_dict()["error"] == "asia: connection refused"
    table = r.status_table([row, broken])
    assert "eu-west -> us" in table and "streaming" in table and "connection refused" in table
    assert "no cross-zone pair" in r.status_table([])


def test_status_cli_needs_the_replication_section(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from skylift.cli import main

    example = Path(__file__).resolve().parents[3] / "examples" / "regions.yaml"
    monkeypatch.setattr(
        "sys.argv", ["skylift", "region", "replication", "status", "-c", str(example)]
    )
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "no `replication:` section" in capsys.readouterr().err


def test_replication_config_is_off_unless_given() -> None:
    from skylift.config.replication import ReplicationSettings
    from skylift.config.root import SkyliftConfig

    assert SkyliftConfig.model_fields["replication"].default is None
    assert ReplicationSettings.model_validate({"every": "2s"}).every == 2.0
    with pytest.raises(ValueError, match="every"):
        ReplicationSettings.model_validate({"every": "0s"})


async def test_the_daemon_loop_retries_each_pass_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from skylift.config.replication import ReplicationSettings
    from skylift.regions import replication_sync

    stop = asyncio.Event()
    calls: list[str] = []

    def one_pass(config: object, base: object, fallback: str, timeout: float) -> list[object]:
        calls.append(fallback)
        if len(calls) == 1:
            raise r.ReplicationError("names collide")  # logged; the loop goes on
        if len(calls) == 3:
            stop.set()
        pair = r.Pair("eu-west", fallback)
        return [replication_sync.PairOutcome(pair, None, "eu-west: refused")]

    monkeypatch.setattr(replication_sync, "reconcile_fallback", one_pass)

    class Config:
        replication = ReplicationSettings(every=0.01)

    await asyncio.wait_for(
        replication_sync.keep_copies(Config(), Path("."), "us", stop),  # type: ignore[arg-type]
        5,
    )
    assert calls == ["us", "us", "us"]
