"""A region to back up: real PostgreSQL, the fake Bot API, a config file and a key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backup_world import EU_CHAT, US_CHAT, Deployment, make_database, region_block

from tests.fakes.telegram_bot_api import FakeBotApi, running_fake_bot_api
from tests.fixtures.postgres import PostgresCluster


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[FakeBotApi]:
    with running_fake_bot_api(tmp_path / "telegram", min_interval=0.2) as fake:
        yield fake


@pytest.fixture
def deployment(
    tmp_path: Path, fake_api: FakeBotApi, postgres_cluster: PostgresCluster
) -> Deployment:
    """Regions eu and us, each with its own bot, chat, key and database; keys created."""
    root = tmp_path / "site"
    root.mkdir()
    eu_token = fake_api.add_bot([EU_CHAT])
    us_token = fake_api.add_bot([US_CHAT])
    deployment = Deployment(
        root,
        fake_api,
        postgres_cluster,
        {
            "eu": region_block(
                fake_api, make_database(postgres_cluster), EU_CHAT, "EU_TOKEN", "eu"
            ),
            "us": region_block(
                fake_api, make_database(postgres_cluster), US_CHAT, "US_TOKEN", "us"
            ),
        },
        env={"EU_TOKEN": eu_token, "US_TOKEN": us_token},
        tokens={"eu": eu_token, "us": us_token},
    )
    deployment.write()
    for region in ("eu", "us"):
        deployment.cli("keygen", "--region", region)
    return deployment
