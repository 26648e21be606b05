"""``skylift backup run --region all``: each region to its own chat, in parallel; one region's
failure does not stop the others; regions sharing a bot or a chat are refused (exit 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from backup_world import EU_CHAT, ROOT, US_CHAT, Deployment, make_database, region_block
from typer.testing import CliRunner

from skylift.backup.keys import RegionKey
from skylift.cli.app import app
from tests.fakes.telegram_bot_api import FakeBotApi
from tests.fixtures.postgres import PostgresCluster

ASIA_CHAT = -100333


@pytest.fixture
def three_regions(
    tmp_path: Path, fake_api: FakeBotApi, postgres_cluster: PostgresCluster
) -> Deployment:
    """eu and us with real databases; asia whose database does not exist. Each has its own
    bot, chat and key (keys made in-process: `keygen` is covered by the round-trip tests)."""
    root = tmp_path / "site"
    root.mkdir()
    deployment = Deployment(root, fake_api, postgres_cluster, {})
    for name, chat in (("eu", EU_CHAT), ("us", US_CHAT), ("asia", ASIA_CHAT)):
        dsn = (
            postgres_cluster.dsn(f"absent_{uuid.uuid4().hex[:8]}")
            if name == "asia"
            else make_database(postgres_cluster, rows=1500)
        )
        var = f"{name.upper()}_TOKEN"
        deployment.regions[name] = region_block(
            fake_api, dsn, chat, var, name, part_size="128Ki", min_interval="200ms"
        )
        deployment.env[var] = deployment.tokens[name] = fake_api.add_bot([chat])
        RegionKey.generate(name).write_new(root / "keys" / f"{name}.key")
    deployment.write()
    return deployment


def test_every_region_goes_to_its_own_chat_and_a_failure_stops_no_other(
    three_regions: Deployment,
) -> None:
    deployment = three_regions
    run = deployment.cli("run", "--region", "all", "-o", "json", check=False)
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["ok"] is False and result["failed"] == ["asia"]
    regions = result["regions"]
    assert set(regions) == {"eu", "us", "asia"}
    assert "absent_" in regions["asia"]["error"]  # the refusal, naming the missing database
    for name, chat in (("eu", EU_CHAT), ("us", US_CHAT)):
        backup = regions[name]["backup"]
        assert regions[name]["ok"] and backup["id"].startswith(f"{name}-")
        assert backup["region"] == name and backup["parts"] >= 2
        messages = deployment.fake.messages(chat)
        # this region's parts and manifest, all in its own chat, nothing of any other region
        assert len(messages) == backup["parts"] + 1
        assert {m.file_name.split(".")[0] for m in messages} == {backup["id"]}
        assert messages[-1].file_name == f"{backup['id']}.manifest"
    assert deployment.fake.messages(ASIA_CHAT) == []
    assert "eu: done" in run.stderr and "asia: FAILED" in run.stderr


def test_a_shared_bot_or_chat_exits_3_naming_both_regions(tmp_path: Path) -> None:
    """Refused before any database or Bot API is touched (both addresses lead nowhere)."""
    eu, us = "EU_TOKEN", "US_TOKEN"
    regions = {
        name: {
            "database_url": f"postgresql://app@127.0.0.1:1/{name}",
            "backup": {
                "telegram": {
                    "bot_token_env": var,
                    "chat_id": chat,
                    "api_url": "http://127.0.0.1:1",
                },
                "key_file": f"keys/{name}.key",
            },
        }
        for name, var, chat in (("eu", eu, EU_CHAT), ("us", us, US_CHAT))
    }
    config = tmp_path / "skylift.yaml"
    tokens = {eu: "123:same-bot", us: "123:same-bot"}

    def cli(*args: str, real: bool = False) -> tuple[int, str]:
        """Exit code and stderr: a real process, or the same typer app in-process (faster)."""
        config.write_text(yaml.safe_dump({"regions": regions}))
        argv = ["backup", "run", "-c", str(config), *args]
        if real:
            done = subprocess.run(
                [sys.executable, "-m", "skylift", *argv],
                capture_output=True,
                text=True,
                env={**os.environ, **tokens, "PYTHONPATH": str(ROOT)},
                timeout=60,
            )
            code, out, err = done.returncode, done.stdout, done.stderr
        else:
            result = CliRunner().invoke(app, argv, env=tokens)
            code, out, err = result.exit_code, result.stdout, result.stderr
        assert "same-bot" not in out + err  # the token is never shown
        return code, err

    for region, real in (("all", True), ("us", False)):  # two variables, one bot
        code, err = cli("--region", region, real=real)
        assert code == 3, err
        assert "regions eu and us use the same bot token (the same token value" in err

    tokens[us] = "456:other-bot"
    regions["us"]["backup"]["telegram"]["chat_id"] = str(EU_CHAT)  # the same chat, spelt apart
    code, err = cli("--region", "all")
    assert code == 3
    assert "regions eu and us back up to the same chat" in err
    assert "regions.us.backup.telegram.chat_id" in err


def test_a_channel_name_that_is_another_regions_chat_is_found_through_the_bot_api(
    tmp_path: Path, fake_api: FakeBotApi
) -> None:
    """'@eu_backups' and -100222 pass the config check, but getChat resolves one to the other."""
    fake_api.name_chat(US_CHAT, "@EU_backups")
    tokens = {"EU_TOKEN": fake_api.add_bot([US_CHAT]), "US_TOKEN": fake_api.add_bot([US_CHAT])}
    regions = {
        name: region_block(fake_api, f"postgresql://app@127.0.0.1:1/{name}", chat, var, name)
        for name, chat, var in (("eu", "@eu_backups", "EU_TOKEN"), ("us", US_CHAT, "US_TOKEN"))
    }
    config = tmp_path / "skylift.yaml"
    config.write_text(yaml.safe_dump({"regions": regions}))
    result = CliRunner().invoke(
        app, ["backup", "run", "-c", str(config), "--region", "all"], env=tokens
    )
    assert result.exit_code == 3, result.output
    assert f"regions eu and us back up to the same chat ({US_CHAT} on" in result.stderr
    assert fake_api.calls["getChat"] == 1 and fake_api.calls.get("sendDocument", 0) == 0
