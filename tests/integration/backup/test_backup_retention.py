"""Retention as documented (docs/backup.md), including backups older than 48 hours."""

from __future__ import annotations

import json
import shutil

from backup_world import EU_CHAT, Deployment, fresh_target

HOUR = 3600.0


def test_retention_expires_without_depending_on_deleting_old_messages(
    deployment: Deployment,
) -> None:
    fake = deployment.fake
    deployment.regions["eu"]["backup"]["retention"]["keep_last"] = 1
    deployment.write()

    a = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)
    a_messages = [m.message_id for m in fake.messages(EU_CHAT)]
    fake.advance(49 * HOUR)  # a's messages are now older than 48 hours: bots cannot delete them

    b = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)
    assert [e["id"] for e in b["expired"]] == [a["id"]]
    assert b["expired"][0]["deleted_messages"] == []
    assert sorted(b["expired"][0]["left_in_chat"]) == a_messages
    b_messages = [m.message_id for m in fake.messages(EU_CHAT) if m.message_id not in a_messages]

    c = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)
    assert [e["id"] for e in c["expired"]] == [b["id"]]
    assert sorted(c["expired"][0]["deleted_messages"]) == b_messages  # young: deleted
    in_chat = {m.message_id for m in fake.messages(EU_CHAT)}
    assert set(a_messages) <= in_chat and not set(b_messages) & in_chat

    live = json.loads(deployment.cli("list", "-o", "json").stdout)["backups"]
    assert [x["id"] for x in live] == [c["id"]]
    every = json.loads(deployment.cli("list", "--all", "-o", "json").stdout)["backups"]
    assert {x["id"]: x["status"] for x in every} == {
        a["id"]: "expired",
        b["id"]: "expired",
        c["id"]: "complete",
    }

    # an expired backup is not restorable through skylift, from the index ...
    refused = deployment.cli(
        "restore",
        "--region",
        "eu",
        "--backup",
        a["id"],
        "--target",
        fresh_target(deployment.cluster),
        check=False,
    )
    assert refused.returncode == 1 and "expired" in refused.stderr
    # ... nor from Telegram alone: the pinned manifest's catalog lists live backups only
    shutil.rmtree(deployment.root / "state")
    for old in (a["id"], b["id"]):
        from_chat = deployment.cli(
            "restore",
            "--region",
            "eu",
            "--from-telegram",
            "--backup",
            old,
            "--target",
            fresh_target(deployment.cluster),
            check=False,
        )
        assert from_chat.returncode == 1
        assert "not in the pinned manifest's catalog" in from_chat.stderr
    deployment.cli(
        "restore",
        "--region",
        "eu",
        "--from-telegram",
        "--target",
        fresh_target(deployment.cluster),
    )
