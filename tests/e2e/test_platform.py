"""The reference platform for real: `skylift up` with 3 process replicas behind HAProxy,
on a real PostgreSQL and Redis.

One user logs in through HAProxy; refresh and /me land on other replicas and
work (all state is shared); the replica that issued the token is killed and
nothing changes for the user; Redis is stopped mid-run (503 with Retry-After,
never 500) and recovery follows its restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from skylift.platform.migrate import upgrade
from tests.e2e.harness import Deployment, wait_for, web_service

PASSWORD = "correct horse battery"


def platform_service(tmp_path: Path, database_url: str, redis_url: str) -> dict[str, Any]:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "database-url").write_text(database_url)
    (secrets / "admin-token").write_text("e2e-admin-token\n")
    env = {
        "SKYLIFT_PLATFORM_DATABASE_URL_FILE": str(secrets / "database-url"),
        "SKYLIFT_PLATFORM_REDIS_URL": redis_url,
        "SKYLIFT_PLATFORM_REGION": "eu",
        "SKYLIFT_PLATFORM_KEY_DIR": str(tmp_path / "keys"),
        "SKYLIFT_PLATFORM_ADMIN_TOKEN_FILE": str(secrets / "admin-token"),
        "SKYLIFT_PLATFORM_POOL_SIZE": "3",
        "SKYLIFT_PLATFORM_ARGON2_MEMORY_KIB": "1024",
        "SKYLIFT_PLATFORM_ARGON2_TIME_COST": "1",
        "SKYLIFT_PLATFORM_LOGIN_LIMIT_CLIENT": "10000",
    }
    service = web_service(
        replicas=3, command=f"{sys.executable} -m skylift.platform serve --port {{port}}"
    )
    service["backend"]["env"] = env
    service["health"]["path"] = "/livez"  # a dead Redis is a 503 from the app, not a restart
    service["database"] = {"max_connections": 100, "pool_size": 3, "reserve": 5}
    return service


def ready_replicas(d: Deployment) -> dict[str, int]:
    svc = d.service("platform")
    return {r["id"]: r["pid"] for r in svc["replicas"] if r["state"] == "ready"}


def test_platform_behind_haproxy(
    deploy: Callable[..., Deployment],
    tmp_path: Path,
    postgres_url: str,
    redis_factory: Callable[[], Any],
) -> None:
    redis = redis_factory()
    upgrade(postgres_url)  # replicas also migrate on start; done first to keep start-up short
    d = deploy({"platform": platform_service(tmp_path, postgres_url, redis.url())})
    d.up(timeout=90)
    wait_for(lambda: len(ready_replicas(d)) == 3, 60, "3 ready platform replicas")
    assert d.service("platform")["frontend"] in d.frontend("platform")
    base = d.frontend("platform")

    with httpx.Client(base_url=base, timeout=10) as http:
        creds = {"email": "ada@example.com", "password": PASSWORD}
        assert http.post("/auth/signup", json=creds).status_code == 201
        login = http.post("/auth/login", json=creds)
        assert login.status_code == 200, login.text
        issuer = login.headers["x-replica"]
        pair = login.json()

        # refresh and /me: every call works, and they land on the other replicas too
        # (a replica just ready may still be in HAProxy's rise/slowstart: keep going,
        # with a deadline, until every one has answered; at least 12 rounds)
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        rounds = 0
        while rounds < 12 or (len(seen) < 3 and time.monotonic() < deadline):
            rounds += 1
            r = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert r.status_code == 200, r.text
            pair = r.json()
            seen.add(r.headers["x-replica"])
            me = http.get("/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
            assert me.status_code == 200 and me.json()["home_region"] == "eu"
            seen.add(me.headers["x-replica"])
        assert seen - {issuer}, f"every request went to {issuer}"
        assert len(seen) == 3

        # kill the replica that issued the first token: nothing changes for the user
        os.kill(ready_replicas(d)[issuer], signal.SIGKILL)
        for _ in range(9):
            me = http.get("/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
            assert me.status_code == 200, me.text
            assert me.headers["x-replica"] != issuer
            r = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert r.status_code == 200, r.text
            pair = r.json()
        keys = http.get("/.well-known/jwks.json").json()["keys"]
        assert len(keys) == 1  # all replicas share the region's one key

        # Redis stopped mid-run: a clear 503 with Retry-After from every replica, never a 500
        redis.stop()
        statuses = []
        for _ in range(6):
            r = http.post("/auth/login", json=creds)
            statuses.append(r.status_code)
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1
        assert set(statuses) == {503}, statuses
        me = http.get("/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 503  # the profile cache is in Redis

        redis.start()
        wait_for(
            lambda: http.post("/auth/login", json=creds).status_code == 200,
            20,
            "login to work again after Redis restarted",
        )
        r = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert r.status_code == 200, r.text
        wait_for(lambda: len(ready_replicas(d)) == 3, 60, "the killed replica replaced")

    # three replicas appended to one audit chain; it verifies
    verify = subprocess.run(
        [sys.executable, "-m", "skylift", "platform", "audit", "verify", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SKYLIFT_PLATFORM_DATABASE_URL": postgres_url},
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["records"] >= 2 + 12 + 9 + 1  # signup, login, refreshes
