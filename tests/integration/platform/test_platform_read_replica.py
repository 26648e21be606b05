"""Reads from a real streaming replica (pg_basebackup -R); writes and logins on the primary."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import psycopg

from skylift.platform.app import create_app
from skylift.platform.migrate import upgrade
from skylift.platform.runtime import open_platform
from skylift.platform.settings import PlatformSettings
from tests.polling import wait_for


def _replayed(replica_dsn: str, user_id: str) -> bool:
    with psycopg.connect(replica_dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone() is not None


async def test_profile_reads_come_from_the_replica(
    platform_settings: PlatformSettings, pg_primary_replica: Any
) -> None:
    primary, replica = pg_primary_replica.primary, pg_primary_replica.replica
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS platform WITH (FORCE)")
        conn.execute("CREATE DATABASE platform")
    upgrade(primary.url("platform"))
    settings = dataclasses.replace(
        platform_settings,
        database_url=primary.url("platform"),
        read_database_url=replica.url("platform"),
    )
    wait_for(lambda: _migrated(replica.dsn()), 30, "the migrated schema on the replica")
    replica_dsn = replica.dsn("platform")
    async with open_platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
            with psycopg.connect(replica_dsn, autocommit=True) as standby:
                assert standby.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                standby.execute("SELECT pg_wal_replay_pause()")
                try:
                    # replay paused: sign-up and login still work (primary), and so does /me
                    # (a profile the replica lacks is read from the primary)
                    creds = {"email": "ada@example.com", "password": "correct horse"}
                    assert (await client.post("/auth/signup", json=creds)).status_code == 201
                    pair = (await client.post("/auth/login", json=creds)).json()
                    auth = {"Authorization": f"Bearer {pair['access_token']}"}
                    me = await client.get("/me", headers=auth)
                    assert me.status_code == 200
                    user_id = me.json()["id"]
                    assert not _replayed(replica_dsn, user_id)
                finally:
                    standby.execute("SELECT pg_wal_replay_resume()")
                wait_for(lambda: _replayed(replica_dsn, user_id), 30, "replay of the sign-up")

                # a change on the primary the replica has not replayed yet is not seen: the
                # read went to the replica
                standby.execute("SELECT pg_wal_replay_pause()")
                try:
                    with psycopg.connect(primary.dsn("platform"), autocommit=True) as conn:
                        conn.execute("UPDATE users SET display_name = 'Ada L.' WHERE id = %s",
                                     (user_id,))  # fmt: skip
                    await platform.redis.delete(f"user:{user_id}")
                    assert (await client.get("/me", headers=auth)).json()["display_name"] is None
                finally:
                    standby.execute("SELECT pg_wal_replay_resume()")
            await platform.redis.delete(f"user:{user_id}")
            wait_for(lambda: _has_name(replica_dsn, user_id), 30, "replay of the update")
            assert (await client.get("/me", headers=auth)).json()["display_name"] == "Ada L."
            ready = await client.get("/readyz")
            assert ready.status_code == 200


def _migrated(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'platform'").fetchone() is None:
            return False
    with psycopg.connect(dsn.rsplit("/", 1)[0] + "/platform", autocommit=True) as conn:
        return conn.execute("SELECT to_regclass('feature_flags')").fetchone() != (None,)


def _has_name(dsn: str, user_id: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT display_name FROM users WHERE id = %s", (user_id,)).fetchone()
        return row is not None and row[0] == "Ada L."
