"""Helpers of the backup tests: real PostgreSQL, the fake Bot API, a config file.

A module of its own with a unique name (not ``conftest``): test files import it by
name, and a bare ``from conftest import`` could pick another directory's conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from tests.fakes.telegram_bot_api import FakeBotApi
from tests.fixtures.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[3]
EU_CHAT, US_CHAT = -100111, -100222


def make_database(cluster: PostgresCluster, rows: int = 3000) -> str:
    """A fresh database with a few tables of text that does not compress to nothing."""
    name = f"src_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, bio text)")
        conn.execute(
            "INSERT INTO users SELECT i, 'user' || i || '@example.eu', "
            "md5(random()::text) || md5(random()::text) || repeat(md5(i::text), 3) "
            "FROM generate_series(1, %s) i",
            (rows,),
        )
        conn.execute("CREATE SCHEMA billing")
        conn.execute(
            "CREATE TABLE billing.invoices (id bigserial PRIMARY KEY, user_id int "
            "REFERENCES users(id), amount numeric(12,2), note text)"
        )
        conn.execute(
            "INSERT INTO billing.invoices (user_id, amount, note) SELECT 1 + i %% %s, "
            "round((random() * 1000)::numeric, 2), md5(random()::text) "
            "FROM generate_series(1, %s) i",
            (rows, rows * 2),
        )
        conn.execute("CREATE TABLE empty_table (x int)")
    return cluster.dsn(name)


def table_stats(dsn: str) -> dict[str, Any]:
    from skylift.backup.postgres import database_stats

    return database_stats(dsn)


@dataclass
class Deployment:
    """A config with regions (eu, optionally us) pointing at the fake and at real databases."""

    root: Path
    fake: FakeBotApi
    cluster: PostgresCluster
    regions: dict[str, dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "skylift.yaml"

    def write(self) -> None:
        data = {"project": "backup-test", "state_dir": "state", "regions": self.regions}
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")

    def cli(
        self, *args: str, check: bool = True, timeout: float = 300, root: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "skylift", *root, "backup", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env, "PYTHONPATH": str(ROOT)},
            cwd=self.root,
        )
        for token in self.tokens.values():  # secrets never leak into any output
            assert token not in result.stdout and token not in result.stderr
        if check:
            assert result.returncode == 0, (
                f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def database(self, region: str) -> str:
        return str(self.regions[region]["database_url"])


def region_block(
    fake: FakeBotApi, dsn: str, chat: int, env_var: str, key: str, **telegram: Any
) -> dict[str, Any]:
    return {
        "database_url": dsn,
        "backup": {
            "telegram": {
                "bot_token_env": env_var,
                "chat_id": chat,
                "api_url": fake.url,
                "part_size": "64Ki",
                "min_interval": "250ms",
                "max_retries": 4,
                **telegram,
            },
            "key_file": f"keys/{key}.key",
            "retention": {"keep_last": 3, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0},
        },
    }


def fresh_target(cluster: PostgresCluster) -> str:
    """A URL for a database that does not exist yet (restore creates it)."""
    return cluster.dsn(f"restored_{uuid.uuid4().hex[:10]}")
