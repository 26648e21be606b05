"""Tampered or missing parts and other regions' keys are refused, clearly, restoring nothing."""

from __future__ import annotations

import json
import shutil

import psycopg
import pytest
from backup_world import EU_CHAT, Deployment, fresh_target

from skylift.backup.telegram import BotApi


def _tables_in(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def backed_up(deployment: Deployment) -> dict[str, object]:
    return json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)


def test_a_tampered_part_is_refused_and_nothing_is_restored(
    deployment: Deployment, backed_up: dict[str, object]
) -> None:
    parts = deployment.fake.messages(EU_CHAT)[:-1]
    deployment.fake.tamper(parts[-2].file_id, offset=1234)
    target = fresh_target(deployment.cluster)
    result = deployment.cli("restore", "--region", "eu", "--target", target, check=False)
    assert result.returncode == 1
    assert f"part {len(parts) - 1}/{len(parts)}" in result.stderr
    assert "does not match the manifest" in result.stderr and "altered" in result.stderr
    assert "Traceback" not in result.stderr
    assert _tables_in(target) == []  # pg_restore never committed
    drill = deployment.cli("verify", "--region", "eu", check=False)
    assert drill.returncode == 1 and "does not match the manifest" in drill.stderr


def test_a_missing_part_is_refused(deployment: Deployment, backed_up: dict[str, object]) -> None:
    parts = deployment.fake.messages(EU_CHAT)[:-1]
    deployment.fake.lose(parts[1].file_id)
    target = fresh_target(deployment.cluster)
    result = deployment.cli("restore", "--region", "eu", "--target", target, check=False)
    assert result.returncode == 1
    assert f"part 2/{len(parts)}" in result.stderr and "missing" in result.stderr
    assert _tables_in(target) == []


def test_another_regions_key_is_refused_by_name(
    deployment: Deployment, backed_up: dict[str, object]
) -> None:
    # eu's config pointing at us's key file
    deployment.regions["eu"]["backup"]["key_file"] = "keys/us.key"
    deployment.write()
    result = deployment.cli(
        "restore", "--region", "eu", "--target", fresh_target(deployment.cluster), check=False
    )
    assert result.returncode == 1
    assert "holds region 'us''s key" in result.stderr and "needs its own key" in result.stderr


def test_a_different_key_for_the_same_region_is_refused_with_both_fingerprints(
    deployment: Deployment, backed_up: dict[str, object]
) -> None:
    (deployment.root / "keys" / "eu.key").rename(deployment.root / "keys" / "eu.old")
    deployment.cli("keygen", "--region", "eu")  # a new eu key: old backups are not its
    result = deployment.cli(
        "restore", "--region", "eu", "--target", fresh_target(deployment.cluster), check=False
    )
    assert result.returncode == 1
    assert (
        "was encrypted with key" in result.stderr
        and "use the key the backup was made with" in result.stderr
    )


def test_a_manifest_of_another_region_is_refused(
    deployment: Deployment, backed_up: dict[str, object]
) -> None:
    """us's chat pins eu's manifest (forwarded by mistake): restoring us refuses it."""
    us = json.loads(deployment.cli("run", "--region", "us", "-o", "json").stdout)
    assert us["id"].startswith("us-")
    # copy eu's sealed manifest into us's chat under us's bot, then pin it there
    eu_manifest = deployment.fake.messages(EU_CHAT)[-1]
    data = deployment.fake.file_bytes(eu_manifest.file_id)
    forged = deployment.root / "eu.manifest"
    forged.write_bytes(data)
    # through skylift's own client: the fake answers 429 to a second message within a
    # second to the same chat, and the client waits out its retry_after
    with BotApi(deployment.fake.url, deployment.tokens["us"]) as bot:
        sent = bot.send_document("-100222", forged, "x.manifest")
        bot.pin_message("-100222", sent.message_id)
    shutil.rmtree(deployment.root / "state")
    result = deployment.cli(
        "restore",
        "--region",
        "us",
        "--from-telegram",
        "--target",
        fresh_target(deployment.cluster),
        check=False,
    )
    assert result.returncode == 1
    assert "belongs to region 'eu', not 'us'" in result.stderr


def test_file_ids_are_bound_to_the_bot_that_uploaded_them(
    deployment: Deployment, backed_up: dict[str, object]
) -> None:
    deployment.env["EU_TOKEN"] = deployment.tokens["us"]  # the wrong bot for eu
    result = deployment.cli(
        "restore", "--region", "eu", "--target", fresh_target(deployment.cluster), check=False
    )
    assert result.returncode == 1
    assert "manifest of backup" in result.stderr and "cannot be fetched" in result.stderr
