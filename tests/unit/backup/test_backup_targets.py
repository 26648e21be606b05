"""No two regions share a backup chat or a bot token source (refused at load, exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from skylift.cli.app import app
from skylift.config import ConfigError, load_config
from skylift.config.backup_targets import chat_key, server_key


def two_regions(eu: str, us: str) -> str:
    return f"""
regions:
  eu:
    database_url: postgresql://app@db.eu:5432/app
    backup:
      telegram: {eu}
      key_file: keys/eu.key
  us:
    database_url: postgresql://app@db.us:5432/app
    backup:
      telegram: {us}
      key_file: keys/us.key
"""


def root_errors(tmp_path: Path, text: str) -> str:
    path = tmp_path / "skylift.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    return " | ".join(i.message for i in err.value.issues if i.path == "(root)")


def test_own_chats_and_own_bots_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(
        two_regions(
            "{bot_token_env: EU_TOKEN, chat_id: -100}",
            "{bot_token_file: secrets/us-token, chat_id: '@US_backups'}",
        )
    )
    assert set(load_config(path, environ={}).config.regions) == {"eu", "us"}


@pytest.mark.parametrize(
    ("eu", "us"),
    [
        ("{bot_token_env: EU, chat_id: -100}", "{bot_token_env: US, chat_id: '-100'}"),
        ("{bot_token_env: EU, chat_id: '@Backups'}", "{bot_token_env: US, chat_id: '@backups'}"),
        (
            "{bot_token_env: EU, chat_id: 7, api_url: 'https://API.telegram.org:443/'}",
            "{bot_token_env: US, chat_id: 7}",
        ),
    ],
)
def test_the_same_chat_however_spelt_is_refused(tmp_path: Path, eu: str, us: str) -> None:
    message = root_errors(tmp_path, two_regions(eu, us))
    assert "regions eu and us back up to the same chat" in message
    assert "regions.us.backup.telegram.chat_id" in message and "own chat" in message


def test_the_same_chat_on_another_bot_api_server_is_another_chat(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(
        two_regions(
            "{bot_token_env: EU, chat_id: -100, api_url: 'http://127.0.0.1:8081'}",
            "{bot_token_env: US, chat_id: -100, api_url: 'http://127.0.0.1:8082'}",
        )
    )
    load_config(path, environ={})


@pytest.mark.parametrize(
    ("eu", "us", "field"),
    [
        ("{bot_token_env: TOKEN, chat_id: -1}", "{bot_token_env: TOKEN, chat_id: -2}", "env"),
        (
            "{bot_token_file: secrets/token, chat_id: -1}",
            "{bot_token_file: ./secrets/../secrets/token, chat_id: -2}",
            "file",
        ),
    ],
)
def test_the_same_token_source_is_refused(tmp_path: Path, eu: str, us: str, field: str) -> None:
    message = root_errors(tmp_path, two_regions(eu, us))
    assert "regions eu and us use the same bot token" in message
    assert f"regions.us.backup.telegram.bot_token_{field}" in message and "own bot" in message


def test_the_cli_exits_3_naming_both_regions(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(
        two_regions("{bot_token_env: T, chat_id: -5}", "{bot_token_env: T, chat_id: -5}")
    )
    result = CliRunner().invoke(app, ["backup", "run", "--region", "all", "-c", str(path)])
    assert result.exit_code == 3
    assert "regions eu and us back up to the same chat" in result.output
    assert "regions eu and us use the same bot token" in result.output


def test_keys_normalise_spellings() -> None:
    assert chat_key(-100) == chat_key(" -100 ") == "-100"
    assert chat_key("@Chan") == "@chan"
    assert server_key("HTTPS://Api.Telegram.org:443/") == "https://api.telegram.org"
    assert server_key("http://127.0.0.1:8081") != server_key("http://127.0.0.1:8082")
