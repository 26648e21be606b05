"""Login and authenticated-request throughput of the reference platform, 1 vs 3 replicas.

Runs the real thing: a throwaway PostgreSQL and Redis, `skylift up` with the
platform's process replicas behind HAProxy, load from ``wrk`` (Lua scripts:
logins rotate over many accounts; ``GET /me`` rotates over their tokens). Both
replica counts are measured in the same run, one after the other, on the same
databases. argon2id runs with the production defaults (19 MiB, 2 passes), so
login numbers are what an operator gets; rate limits are raised for the run
(one client address sends everything).

Run: .venv/bin/python benchmarks/platform_auth.py [--duration 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skylift.platform.migrate import upgrade  # noqa: E402
from tests.e2e.harness import Deployment, wait_for, web_service  # noqa: E402
from tests.fixtures.postgres import running_cluster  # noqa: E402
from tests.fixtures.redis import running_redis  # noqa: E402

PASSWORD = "benchmark password 1"
DONE = """
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_list(items: list[str]) -> str:
    return "{" + ",".join(json.dumps(i) for i in items) + "}"


def login_script(emails: list[str]) -> str:
    bodies = [json.dumps({"email": e, "password": PASSWORD}) for e in emails]
    return f"""
local bodies = {lua_list(bodies)}
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/auth/login", {{["Content-Type"] = "application/json"}}, bodies[i])
end
{DONE}"""


def me_script(tokens: list[str]) -> str:
    return f"""
local tokens = {lua_list(tokens)}
local i = math.random(#tokens)
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/me", {{["Authorization"] = "Bearer " .. tokens[i]}})
end
{DONE}"""


def run_wrk(
    url: str, script: str, duration: int, connections: int, workdir: Path
) -> dict[str, Any]:
    path = workdir / "script.lua"
    path.write_text(script)
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    seconds = stats["duration_us"] / 1e6
    ok = stats["requests"] - stats["status_errors"]
    return {
        "requests": stats["requests"],
        "ok_per_s": round(ok / seconds, 1),
        "errors": stats["status_errors"] + stats["socket_errors"],
        "p50_ms": round(stats["p50_us"] / 1000, 1),
        "p99_ms": round(stats["p99_us"] / 1000, 1),
    }


def platform_service(
    root: Path, database_url: str, redis_url: str, replicas: int
) -> dict[str, Any]:
    secrets = root / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / "database-url").write_text(database_url)
    service = web_service(
        replicas=replicas, command=f"{sys.executable} -m skylift.platform serve --port {{port}}"
    )
    service["backend"]["env"] = {
        "SKYLIFT_PLATFORM_DATABASE_URL_FILE": str(secrets / "database-url"),
        "SKYLIFT_PLATFORM_REDIS_URL": redis_url,
        "SKYLIFT_PLATFORM_KEY_DIR": str(root / "keys"),
        "SKYLIFT_PLATFORM_REGION": "bench",
        "SKYLIFT_PLATFORM_LOGIN_LIMIT_CLIENT": "100000000",
        "SKYLIFT_PLATFORM_LOGIN_LIMIT_ACCOUNT": "100000000",
        "SKYLIFT_PLATFORM_POOL_SIZE": "5",
    }
    service["health"]["path"] = "/livez"
    return service


def measure(
    root: Path, database_url: str, redis_url: str, replicas: int, args: argparse.Namespace
) -> dict[str, Any]:
    d = Deployment(root / f"r{replicas}", {"platform": {}})
    d.root.mkdir()
    d.services = {"platform": platform_service(root, database_url, redis_url, replicas)}
    d.write()
    try:
        d.up(timeout=90)
        wait_for(lambda: d.service("platform")["ready"] == replicas, 60, "replicas ready")
        base = d.frontend("platform")
        emails = [f"bench{i}@example.com" for i in range(args.users)]
        with httpx.Client(base_url=base, timeout=30) as http:
            for email in emails:
                r = http.post("/auth/signup", json={"email": email, "password": PASSWORD})
                assert r.status_code in (201, 409), r.text
            tokens, seen = [], set()
            for email in emails:
                r = http.post("/auth/login", json={"email": email, "password": PASSWORD})
                assert r.status_code == 200, r.text
                tokens.append(r.json()["access_token"])
                seen.add(r.headers["x-replica"])
        login = run_wrk(base, login_script(emails), args.duration, args.connections, root)
        me = run_wrk(base, me_script(tokens), args.duration, args.connections, root)
        return {"replicas": replicas, "replicas_seen": len(seen), "login": login, "me": me}
    finally:
        d.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--replicas", default="1,3")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    results = []
    root = Path(tempfile.mkdtemp(prefix="skylift-bench-platform-"))
    try:
        with running_cluster() as pg, running_redis() as redis:
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE platform")
            upgrade(pg.url("platform"))
            for n in (int(x) for x in args.replicas.split(",")):
                results.append(measure(root, pg.url("platform"), redis.url(), n, args))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "duration_s": args.duration,
                "connections": args.connections,
                "results": results,
            },
            indent=2,
        )
    )
    columns = ["replicas", "login/s", "login p50 ms", "login p99 ms"]
    columns += ["/me per s", "/me p50 ms", "/me p99 ms", "errors"]
    print("\n| " + " | ".join(columns) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        lg, me = r["login"], r["me"]
        print(
            f"| {r['replicas']} | {lg['ok_per_s']} | {lg['p50_ms']} | {lg['p99_ms']} | "
            f"{me['ok_per_s']} | {me['p50_ms']} | {me['p99_ms']} | {lg['errors'] + me['errors']} |"
        )


if __name__ == "__main__":
    main()
