"""Audit aggregation without a database: what crosses, how the aggregator judges."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from skylift.cli.audit_regions import aggregator_env
from skylift.config import ConfigError, load_config
from skylift.platform import peers
from skylift.platform.audit import GENESIS, AuditRecord, record_hash
from skylift.platform.audit_aggregate import AggregationOff, Seen, judge, sources
from skylift.platform.audit_export import EXPORTED, ExportVerifier, project, pseudonym
from skylift.platform.topology import TopologyError, parse_topology
from skylift.regions.topology_file import topology_document

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "regions.yaml"
EMAIL, IP = "grace@example.de", "203.0.113.77"


def _chain(n: int) -> list[AuditRecord]:
    records, prev = [], GENESIS
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, n + 1):
        ts = t0 + timedelta(seconds=seq)
        data = {"client": IP, "email": EMAIL}
        digest = record_hash(seq, ts, "eu-west", "auth.login", f"user{seq}", data, prev)
        records.append(
            AuditRecord(seq, ts, "eu-west", "auth.login", f"user{seq}", data, prev, digest)
        )
        prev = digest
    return records


def test_pseudonym_is_stable_in_a_region_and_unjoinable_across_regions() -> None:
    eu, us = b"e" * 32, b"u" * 32
    uid = "6f1c2d4e-0000-4000-8000-000000000001"
    assert pseudonym(eu, uid) == pseudonym(eu, uid)  # a region can count one actor's events
    assert pseudonym(eu, uid) != pseudonym(us, uid)  # the same user in two regions: two ids
    assert pseudonym(eu, uid) != pseudonym(eu, uid + "2")
    assert pseudonym(eu, None) is None
    pid = pseudonym(eu, uid)
    assert pid is not None and len(pid) == 32 and int(pid, 16) >= 0 and uid not in pid


def test_projection_carries_the_exported_fields_only() -> None:
    record = _chain(1)[0]
    row = dataclasses.asdict(record)  # a full row, data included, as a careless query would read
    out = project(row, b"s" * 32)
    assert tuple(out) == EXPORTED
    dumped = json.dumps(out)
    for secret in (EMAIL, IP, "user1", record.prev_hash):
        assert secret not in dumped
    assert out["hash"] == record.hash and out["seq"] == 1 and out["event"] == "auth.login"


def test_region_verdict_names_the_first_bad_record() -> None:
    chain = _chain(5)
    chain[2] = dataclasses.replace(chain[2], data={"client": "198.51.100.1"})  # edited in SQL
    verifier = ExportVerifier()
    for record in chain:
        verifier.add(record)
    verdict = verifier.verdict()
    assert not verdict.ok and verdict.first_bad_seq == 3
    assert verdict.head_seq == 5 and verdict.records == 5
    assert all(IP not in p and "198.51.100.1" not in p for p in verdict.problems)

    intact = ExportVerifier()
    for record in _chain(3):
        intact.add(record)
    assert intact.verdict().ok and intact.verdict().first_bad_seq is None


def _verdict(head: int, ok: bool = True, first_bad: int | None = None) -> dict[str, Any]:
    problems = [] if ok else [f"record {first_bad}: content does not match its hash (edited)"]
    return {"ok": ok, "records": head, "head_seq": head, "head_hash": "h" * 64,
            "first_bad_seq": first_bad, "problems": problems}  # fmt: skip


def test_judge_flags_a_head_that_moved_backwards() -> None:
    check = judge("eu-west", Seen(5, "a" * 64), None, _verdict(3))
    assert not check.ok and check.first_bad_seq == 4
    assert "head moved backwards" in check.problems[0] and "4..5" in check.problems[0]


def test_judge_flags_another_hash_at_a_seq_seen_before() -> None:
    anchor = {"seq": 5, "hash": "b" * 64}
    check = judge("eu-west", Seen(5, "a" * 64), anchor, _verdict(7))
    assert not check.ok and check.first_bad_seq == 5 and "record 5" in check.problems[0]


def test_judge_keeps_the_regions_own_verdict_and_the_earliest_bad_record() -> None:
    anchor = {"seq": 5, "hash": "b" * 64}
    check = judge("us", Seen(5, "a" * 64), anchor, _verdict(7, ok=False, first_bad=2))
    assert not check.ok and check.first_bad_seq == 2 and len(check.problems) == 2
    fine = judge("us", Seen(5, "a" * 64), {"seq": 5, "hash": "a" * 64}, _verdict(7))
    assert fine.ok and fine.first_bad_seq is None and fine.head_seq == 7
    first_pull = judge("us", None, None, _verdict(0))
    assert first_pull.ok


def _config(tmp_path: Path, aggregation: Any) -> Any:
    data = yaml.safe_load(EXAMPLE.read_text())
    if aggregation is not None:
        data["audit_aggregation"] = aggregation
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path).config


def test_config_is_off_by_default_and_reaches_the_topology_file(tmp_path: Path) -> None:
    off = _config(tmp_path, None)
    assert off.audit_aggregation is None
    assert "audit_aggregation" not in topology_document(off, "us")
    assert parse_topology(topology_document(off, "us")).audit is None

    on = _config(tmp_path, {"region": "us", "regions": ["eu-west", "us"]})
    doc = topology_document(on, "asia")
    assert doc["audit_aggregation"] == {"region": "us", "regions": ["eu-west", "us"]}
    facts = parse_topology(doc).audit
    assert facts is not None and facts.region == "us" and facts.sources == ("eu-west", "us")


@pytest.mark.parametrize(
    ("aggregation", "named"),
    [
        ({"region": "mars", "regions": ["us"]}, "audit_aggregation.region"),
        ({"region": "us", "regions": ["eu-west", "moon"]}, "audit_aggregation.regions"),
        ({"region": "us", "regions": []}, "audit_aggregation.regions is empty"),
        ({"region": "us", "regions": ["us"], "every": "1m"}, "every"),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, aggregation: Any, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, aggregation)
    assert named in str(caught.value)


def test_only_opted_in_regions_are_pulled_and_only_by_the_aggregator(tmp_path: Path) -> None:
    on = _config(tmp_path, {"region": "us", "regions": ["eu-west", "us"]})
    regions = parse_topology(topology_document(on, "us"))
    assert sources(regions, "us") == ("eu-west", "us")  # asia, eu-central: never asked
    assert sources(regions, "us", ["eu-west"]) == ("eu-west",)
    with pytest.raises(AggregationOff, match="did not opt in"):
        sources(regions, "us", ["asia"])
    with pytest.raises(AggregationOff, match="runs in region us, not in eu-west"):
        sources(regions, "eu-west")
    with pytest.raises(AggregationOff, match="off"):
        sources(parse_topology(topology_document(_config(tmp_path, None), "us")), "us")
    bad = topology_document(on, "us") | {"audit_aggregation": {"region": "us", "regions": ["x"]}}
    with pytest.raises(TopologyError, match="unknown regions"):
        parse_topology(bad)


def test_cli_names_every_missing_setting() -> None:
    with pytest.raises(typer.Exit) as caught:
        aggregator_env({"SKYLIFT_PLATFORM_REGION": "us"})
    assert caught.value.exit_code == 2
    env = aggregator_env({"SKYLIFT_REGION": "us", "SKYLIFT_REGION_TOPOLOGY_FILE": "/t",
                          "SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE": "/k"})  # fmt: skip
    assert env.region == "us" and str(env.topology_file) == "/t"


def test_cli_refuses_before_any_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage and config errors, found before a database or a region is contacted."""
    from typer.testing import CliRunner

    from skylift.cli.platform import platform_app

    on = _config(tmp_path, {"region": "us", "regions": ["eu-west", "us"]})
    (tmp_path / "topology.json").write_text(json.dumps(topology_document(on, "us")))
    (tmp_path / "key").write_bytes(b"k" * 32)
    monkeypatch.setenv("SKYLIFT_PLATFORM_TOPOLOGY_FILE", str(tmp_path / "topology.json"))
    monkeypatch.setenv("SKYLIFT_PLATFORM_DIRECTORY_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("SKYLIFT_PLATFORM_REGION", "us")
    db = ["--database-url", "postgresql://nobody@127.0.0.1:1/none"]  # never reached
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(platform_app, ["audit", *args, *db])

    r = run("query")
    assert r.exit_code == 2 and "--all-regions" in r.output
    r = run("query", "--all-regions", "--since", "yesterday")
    assert r.exit_code == 2 and "--since" in r.output
    r = run("query", "--all-regions", "--region", "asia")
    assert r.exit_code == 3 and "did not opt in" in r.output
    monkeypatch.setenv("SKYLIFT_PLATFORM_REGION", "eu-west")
    r = run("verify", "--all-regions")
    assert r.exit_code == 3 and "runs in region us, not in eu-west" in r.output


async def test_puller_turns_every_failed_call_into_a_named_pull_error(tmp_path: Path) -> None:
    import httpx

    from skylift.platform.audit_aggregate import Puller, PullError

    on = _config(tmp_path, {"region": "us", "regions": ["eu-west", "us"]})
    regions = parse_topology(topology_document(on, "us"))
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if body["to"] == "us":
            raise httpx.ConnectError("refused")
        if body["after"] == 1:
            return httpx.Response(403, json={"error": "audit export is off in eu-west"})
        if body["after"] == 2:
            return httpx.Response(200, json={"region": "eu-central", "records": []})
        return httpx.Response(200, json={"region": "eu-west", "records": [], "more": False})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        puller = Puller("us", regions, b"k" * 32, client)
        assert (await puller.page("eu-west", 0, True))["region"] == "eu-west"
        with pytest.raises(PullError, match="us unreachable"):
            await puller.page("us", 0, True)
        with pytest.raises(PullError, match=r"answered 403.*off in eu-west"):
            await puller.page("eu-west", 1, True)
        with pytest.raises(PullError, match="answered by another region"):
            await puller.page("eu-west", 2, True)
    first = seen[0]
    assert first.url.path == "/internal/audit/export"
    assert first.headers["x-skylift-region"] == "eu-west"
    assert (first.url.host, first.url.port) == ("127.0.0.1", 9101)  # eu-west's edge
    assert peers.verify(
        b"k" * 32,
        first.headers["skylift-signature"],
        method="POST",
        path="/internal/audit/export",
        body=first.content,
        now=int(first.headers["skylift-signature"].split(",")[0][2:]),
    )


def test_rewound_is_said_only_when_the_record_held_last_is_gone_or_changed() -> None:
    from skylift.platform.audit_aggregate import rewound

    held = Seen(4, "a" * 64)
    assert rewound(None, None) is None  # a first pull holds nothing to compare
    assert rewound(held, {"seq": 4, "hash": "a" * 64}) is None
    assert "record 4: gone" in (rewound(held, None) or "")
    assert "record 4" in (rewound(held, {"seq": 4, "hash": "b" * 64}) or "")
