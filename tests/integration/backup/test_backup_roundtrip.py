"""run -> list -> restore -> verify against real PostgreSQL and the fake Bot API."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from backup_world import EU_CHAT, US_CHAT, Deployment, fresh_target, table_stats


def test_round_trip_restores_identical_data_in_the_regions_own_chat(deployment: Deployment) -> None:
    key_file = deployment.root / "keys" / "eu.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = deployment.cli("keygen", "--region", "eu", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr

    run = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)
    assert run["id"].startswith("eu-") and run["parts"] >= 3 and run["bytes"] > 0
    assert run["reused_parts"] == 0

    # every part and the manifest went to eu's chat, none to us's; manifest last and pinned
    eu_messages = deployment.fake.messages(EU_CHAT)
    assert len(eu_messages) == run["parts"] + 1
    assert eu_messages[-1].file_name == f"{run['id']}.manifest"
    assert deployment.fake.chats[str(EU_CHAT)].pinned == eu_messages[-1].message_id
    assert deployment.fake.messages(US_CHAT) == []
    stored = sum(len(deployment.fake.file_bytes(m.file_id)) for m in eu_messages[:-1])
    assert stored == run["bytes"]
    assert all(len(deployment.fake.file_bytes(m.file_id)) <= 64 * 1024 for m in eu_messages)

    listed = json.loads(deployment.cli("list", "-o", "json").stdout)["backups"]
    assert [(b["id"], b["status"], b["parts"]) for b in listed] == [
        (run["id"], "complete", run["parts"])
    ]

    target = fresh_target(deployment.cluster)
    restored = json.loads(
        deployment.cli(
            "restore", "--region", "eu", "--backup", run["id"], "--target", target, "-o", "json"
        ).stdout
    )
    assert restored["id"] == run["id"] and restored["parts"] == run["parts"]
    source = table_stats(deployment.database("eu"))
    assert set(source) == {"public.users", "billing.invoices", "public.empty_table"}
    assert table_stats(target) == source

    verified = json.loads(deployment.cli("verify", "--region", "eu", "-o", "json").stdout)
    assert verified == {**verified, "id": run["id"], "ok": True, "mismatches": [], "tables": 3}


def test_restore_from_telegram_alone_after_losing_the_state_store(
    deployment: Deployment,
) -> None:
    first = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)
    second = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)
    shutil.rmtree(deployment.root / "state")  # the index is gone: key + token + chat remain

    for backup in ("latest", first["id"]):
        target = fresh_target(deployment.cluster)
        out = deployment.cli(
            "restore",
            "--region",
            "eu",
            "--from-telegram",
            "--backup",
            backup,
            "--target",
            target,
            "-o",
            "json",
        ).stdout
        assert json.loads(out)["id"] == (second["id"] if backup == "latest" else first["id"])
        assert table_stats(target) == table_stats(deployment.database("eu"))


def test_restore_refuses_the_source_database_unless_forced(deployment: Deployment) -> None:
    deployment.cli("run", "--region", "eu")
    refused = deployment.cli(
        "restore", "--region", "eu", "--target", deployment.database("eu"), check=False
    )
    assert refused.returncode == 1
    assert "own database" in refused.stderr and "--force" in refused.stderr


def test_unknown_region_is_a_usage_error_and_missing_token_says_what_to_set(
    deployment: Deployment,
) -> None:
    unknown = deployment.cli("run", "--region", "asia", check=False)
    assert unknown.returncode == 2 and "'asia' is not in" in unknown.stderr
    deployment.env.pop("EU_TOKEN")
    missing = deployment.cli("run", "--region", "eu", check=False)
    assert missing.returncode == 1 and "EU_TOKEN" in missing.stderr and "not set" in missing.stderr


def test_debug_logs_never_show_the_token_or_the_key(deployment: Deployment) -> None:
    deployment.fake.inject("sendDocument", "ok", "429", "drop")  # retries get logged too
    result = deployment.cli("run", "--region", "eu", root=("--log-level", "debug"))
    key = json.loads((deployment.root / "keys" / "eu.key").read_text())["key"]
    assert "part acknowledged" in result.stderr and "rate limited" in result.stderr
    assert key not in result.stdout + result.stderr  # the token is checked by cli() itself


def test_schedule_runs_the_regions_that_are_due(deployment: Deployment) -> None:
    deployment.regions["eu"]["backup"]["schedule"] = "* * * * *"  # us has no schedule
    deployment.write()
    ran = deployment.cli("schedule", "--once")
    assert ran.stdout.startswith("eu: backup eu-")
    listed = json.loads(deployment.cli("list", "-o", "json").stdout)["backups"]
    assert [b["region"] for b in listed] == ["eu"]


def test_the_commands_also_run_in_process_under_a_test_runner(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a real stdout the CLI runs the worker's code in-process instead of exec."""
    from typer.testing import CliRunner

    from skylift.cli.app import app

    for name, value in deployment.env.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    config = str(deployment.config)
    ran = runner.invoke(app, ["backup", "run", "-c", config, "--region", "eu", "-o", "json"])
    assert ran.exit_code == 0, ran.output
    backup_id = json.loads(ran.stdout)["id"]
    checked = runner.invoke(app, ["backup", "verify", "-c", config, "--region", "eu", "-o", "json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["id"] == backup_id and json.loads(checked.stdout)["ok"]
    wrong = runner.invoke(
        app,
        [
            "backup",
            "restore",
            "-c",
            config,
            "--region",
            "eu",
            "--target",
            deployment.database("eu"),
        ],
    )
    assert wrong.exit_code == 1 and "own database" in wrong.output
