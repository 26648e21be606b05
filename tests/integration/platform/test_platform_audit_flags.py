"""Audit chain (verify detects edit, removal, reordering), admin API, feature flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from skylift.platform.db import libpq_url


def _verify_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skylift", "platform", "audit", "verify", "-o", "json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SKYLIFT_PLATFORM_DATABASE_URL": database_url},
    )


async def _events(running: Any, n_users: int = 3) -> None:
    for i in range(n_users):
        await running.signup_login(f"user{i}@example.com")


def _sql(database_url: str, statement: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


async def test_audit_chain_verifies_and_detects_edit(running: Any) -> None:
    await _events(running)
    url = running.settings.database_url
    ok = _verify_cli(url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"records": 6' in ok.stdout  # 3 sign-ups + 3 logins

    _sql(url, """UPDATE audit_log SET actor = 'mallory' WHERE seq = 3""")
    broken = _verify_cli(url)
    assert broken.returncode == 1
    assert "record 3: content does not match its hash (edited)" in broken.stdout


async def test_audit_verify_detects_a_removed_record(running: Any) -> None:
    await _events(running)
    _sql(running.settings.database_url, "DELETE FROM audit_log WHERE seq = 4")
    result = _verify_cli(running.settings.database_url)
    assert result.returncode == 1
    assert "record 5: expected seq 4" in result.stdout
    assert "record 5: prev_hash does not match" in result.stdout


async def test_audit_verify_with_a_kept_head_detects_records_cut_off_the_end(
    running: Any,
) -> None:
    await _events(running)
    url = running.settings.database_url
    head = json.loads(_verify_cli(url).stdout)["head"]
    await running.signup_login("late@example.com")  # the log grows after the head was noted
    assert _verify_cli(url, "--expect-head", head).returncode == 0
    _sql(url, "DELETE FROM audit_log WHERE seq >= 5")
    assert _verify_cli(url).returncode == 0  # the chain alone cannot see a cut end...
    cut = _verify_cli(url, "--expect-head", head)
    assert cut.returncode == 1  # ...the kept head can
    assert "is not in the chain" in cut.stdout


async def test_audit_verify_detects_reordered_records(running: Any) -> None:
    await _events(running)
    url = running.settings.database_url
    # swap records 2 and 3 (their seq numbers), keeping each record's own content and hash
    _sql(url, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
    _sql(url, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    _sql(url, "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    result = _verify_cli(url)
    assert result.returncode == 1
    assert "record 2: prev_hash does not match" in result.stdout


async def test_admin_reads_audit_by_time_range(running: Any, admin_token: str) -> None:
    start = datetime.now(UTC)
    await _events(running, 1)
    assert (await running.client.get("/admin/audit")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await running.client.get("/admin/audit", headers=wrong)).status_code == 401
    admin = {"Authorization": f"Bearer {admin_token}"}
    r = await running.client.get("/admin/audit", headers=admin, params={"since": start.isoformat()})
    assert r.status_code == 200
    events = [rec["event"] for rec in r.json()["records"]]
    assert events == ["auth.signup", "auth.login"]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    r = await running.client.get("/admin/audit", headers=admin, params={"since": later})
    assert r.json()["records"] == []
    r = await running.client.get("/admin/audit", headers=admin, params={"until": start.isoformat()})
    assert r.json()["records"] == []
    # reading the log is an admin action, itself audited
    r = await running.client.get("/admin/audit", headers=admin, params={"since": start.isoformat()})
    assert [rec["event"] for rec in r.json()["records"]][-1] == "admin.audit_read"


async def test_flag_change_applies_at_once_and_is_stable(running: Any, admin_token: str) -> None:
    admin = {"Authorization": f"Bearer {admin_token}"}
    tokens = []
    for i in range(40):
        email = f"u{i}@example.com"
        r = await running.client.post("/auth/signup", json={"email": email, "password": "pw123456"})
        assert r.status_code == 201
    running.platform.limiter._limits["client"] = 10_000
    for i in range(40):
        r = await running.client.post(
            "/auth/login", json={"email": f"u{i}@example.com", "password": "pw123456"}
        )
        tokens.append({"Authorization": f"Bearer {r.json()['access_token']}"})

    async def on_for() -> list[bool]:
        return [
            (await running.client.get("/flags", headers=t)).json()["flags"]["new-ui"]
            for t in tokens
        ]

    r = await running.client.put("/admin/flags/new-ui", json={"rollout_percent": 30})
    assert r.status_code == 401
    r = await running.client.put("/admin/flags/new-ui", headers=admin, json={"rollout_percent": 0})
    assert r.status_code == 200
    assert not any(await on_for())
    await running.client.put("/admin/flags/new-ui", headers=admin, json={"rollout_percent": 50})
    half = await on_for()
    assert 0 < sum(half) < 40
    assert await on_for() == half  # stable
    await running.client.put("/admin/flags/new-ui", headers=admin, json={"rollout_percent": 100})
    assert all(await on_for())  # no restart, no cache wait
    await running.client.put(
        "/admin/flags/new-ui", headers=admin, json={"rollout_percent": 100, "enabled": False}
    )
    assert not any(await on_for())
    r = await running.client.put(
        "/admin/flags/new-ui", headers=admin, json={"rollout_percent": 101}
    )
    assert r.status_code == 400


async def test_concurrent_appends_from_many_connections_keep_one_chain(running: Any) -> None:
    import asyncio

    from skylift.platform import audit
    from skylift.platform.audit_verify import verify_database

    async def append(i: int) -> None:
        async with running.platform.db.write() as conn:
            await audit.append(conn, region="eu", event="test.append", actor=None, data={"i": i})

    await asyncio.gather(*(append(i) for i in range(20)))
    result = await verify_database(running.settings.database_url)
    assert result.ok, result.problems
    assert result.records == 20
