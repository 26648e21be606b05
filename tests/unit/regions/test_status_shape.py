"""What `status` and `region status` show for a multi-region file, and the CLI's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from skylift.cli.app import app
from skylift.regions.status import database_entry, region_entry, status_table

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "regions.yaml"
SERVICES = {
    "services": {
        "platform": {"frontend": "127.0.0.1:8600", "desired": 2, "ready": 2, "state": "steady"}
    },
    "controller": {"live": True},
}


def test_answering_region_is_healthy_with_its_services() -> None:
    entry = region_entry(zone="eu", edge="127.0.0.1:9101", answer=SERVICES)
    assert entry["healthy"] is True and entry["services"]["platform"]["ready"] == 2
    assert entry["zone"] == "eu" and entry["edge"] == "127.0.0.1:9101"


def test_silent_region_is_unhealthy_with_the_reason() -> None:
    entry = region_entry(zone="us", edge="127.0.0.1:9100", answer=None, error="refused")
    assert entry == {
        "zone": "us",
        "edge": "127.0.0.1:9100",
        "healthy": False,
        "error": "unreachable: refused",
        "services": {},
    }
    assert "unreachable: refused" in status_table({"us": entry})


def test_no_ready_replica_or_failed_edge_is_unhealthy() -> None:
    empty = {"services": {"platform": {"desired": 2, "ready": 0}}}
    assert region_entry(zone="eu", edge="e", answer=empty)["healthy"] is False
    failed = region_entry(zone="eu", edge="e", answer=SERVICES, edge_state={"state": "failed"})
    assert failed["healthy"] is False and failed["edge_state"] == "failed"
    disabled = region_entry(zone="eu", edge="e", answer=SERVICES, edge_state={"state": "disabled"})
    assert disabled["healthy"] is True


def test_database_entry_promoted_by_record_or_by_role() -> None:
    primary = {"role": "primary", "read_only": False, "error": None}
    standby = {"role": "standby", "reachable": True, "in_recovery": True}
    plain = database_entry(primary=primary, standby=standby, holder="eu-central", promotion=None)
    assert plain["promoted"] is False and plain["standby"]["region"] == "eu-central"
    by_hand = database_entry(
        primary={"role": "unreachable"},
        standby={**standby, "in_recovery": False, "role": "primary"},
        holder="eu-central",
        promotion=None,
    )
    assert by_hand["promoted"] is True
    none = database_entry(primary=primary, standby=None, holder=None, promotion=None)
    assert none["standby"] is None and none["promoted"] is False


def test_up_without_region_on_a_regions_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["up", "-c", str(EXAMPLE)])
    assert result.exit_code == 2
    assert "pass --region NAME or --region all" in result.output
    result = CliRunner().invoke(app, ["down", "-c", str(EXAMPLE), "--region", "mars"])
    assert result.exit_code == 2 and "use one of us, eu-west, eu-central, asia" in result.output


def test_up_all_refuses_shared_host_port_clashes(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["regions"]["asia"]["port_offset"] = 20  # the same ports as eu-central
    data["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(app, ["up", "-c", str(path), "--region", "all", "--detach"])
    assert result.exit_code == 3
    assert "cannot run on one host" in result.output and "asia" in result.output


def test_status_of_a_region_file_with_nothing_running_marks_every_region(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["state_dir"] = str(tmp_path / "state")
    for offset, region in enumerate(data["regions"].values()):
        region["port_offset"] = 1000 + offset * 10  # below the test ports: nothing listens
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(app, ["status", "-c", str(path), "-o", "json"])
    assert result.exit_code == 0, result.output
    regions = json.loads(result.output)["regions"]
    assert list(regions) == ["us", "eu-west", "eu-central", "asia"]
    assert all(r["healthy"] is False for r in regions.values())
    assert all(r["error"].startswith("unreachable: ") for r in regions.values())


def test_a_region_whose_database_was_promoted_away_is_not_healthy() -> None:
    entry = region_entry(zone="eu", edge="e", answer=SERVICES, superseded_by="eu-central")
    assert entry["healthy"] is False and entry["superseded_by"] == "eu-central"
    assert "promoted away to eu-central" in status_table({"eu-west": entry})


def test_one_controller_commands_need_one_region_of_a_regions_file() -> None:
    for args in (["events"], ["scale", "platform", "3"], ["explain", "platform"]):
        result = CliRunner().invoke(app, [*args, "-c", str(EXAMPLE)])
        assert result.exit_code == 2, (args, result.output)
        assert "pass --region NAME" in result.output
    wrong = CliRunner().invoke(app, ["events", "-c", str(EXAMPLE), "--region", "all"])
    assert wrong.exit_code == 2
    refused = CliRunner().invoke(app, ["apply", "-c", str(EXAMPLE)])
    assert refused.exit_code == 2 and "does not change running regions" in refused.output


def test_switchover_is_a_clear_not_yet_with_the_manual_steps() -> None:
    result = CliRunner().invoke(app, ["region", "switchover", "eu-west", "-c", str(EXAMPLE)])
    assert result.exit_code == 2
    assert "not automated yet" in result.output and "pg_basebackup -R" in result.output
    assert "eu-central" in result.output


def test_promote_a_region_without_standby_says_so() -> None:
    result = CliRunner().invoke(app, ["region", "promote", "us", "-c", str(EXAMPLE)])
    assert result.exit_code == 1 and "has no in-zone standby" in result.output
