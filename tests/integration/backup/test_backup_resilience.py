"""What the Bot API does under load is survived; an interrupted backup resumes."""

from __future__ import annotations

import fcntl
import json

from backup_world import EU_CHAT, Deployment, fresh_target, table_stats


def test_429_storm_5xx_and_a_connection_dropped_mid_upload_are_survived(
    deployment: Deployment,
) -> None:
    fake = deployment.fake
    # a storm of 429s, a connection cut half-way through an upload, 5xx as JSON and as HTML
    fake.inject("sendDocument", "ok", "429", "429", "429", "drop", "ok", "500", "502-html", "429")
    run = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)

    assert not fake.faults["sendDocument"], "every injected fault was hit"
    messages = fake.messages(EU_CHAT)
    assert len(messages) == run["parts"] + 1  # nothing stored twice, nothing lost
    # on top of the injected ones, the fake's own 1-per-interval limit never had to refuse
    assert fake.rate_limited == 0

    target = fresh_target(deployment.cluster)
    deployment.cli("restore", "--region", "eu", "--target", target)
    assert table_stats(target) == table_stats(deployment.database("eu"))


def test_an_interrupted_backup_resumes_from_the_acknowledged_parts(
    deployment: Deployment,
) -> None:
    fake = deployment.fake
    # three parts get through, then the connection keeps dropping until retries run out
    fake.inject("sendDocument", "ok", "ok", "ok", *["drop"] * 5)
    failed = deployment.cli("run", "--region", "eu", "-o", "json", check=False)
    assert failed.returncode == 1
    assert "still failing after 4 retries" in failed.stderr and "rerun" in failed.stderr
    listed = json.loads(deployment.cli("list", "--all", "-o", "json").stdout)["backups"]
    assert [(b["status"], b["parts"]) for b in listed] == [("failed", 3)]
    assert len(fake.messages(EU_CHAT)) == 3

    uploads_before = fake.calls["sendDocument"]
    run = json.loads(deployment.cli("run", "--region", "eu", "-o", "json").stdout)
    assert run["id"] == listed[0]["id"], "the rerun continues the same backup"
    assert run["reused_parts"] == 3
    # only the missing parts and the manifest were sent again
    assert fake.calls["sendDocument"] - uploads_before == run["parts"] - 3 + 1
    assert len(fake.messages(EU_CHAT)) == run["parts"] + 1

    verified = json.loads(deployment.cli("verify", "--region", "eu", "-o", "json").stdout)
    assert verified["ok"] and verified["id"] == run["id"]


def test_a_fresh_run_starts_over_and_a_failed_pg_dump_never_counts(
    deployment: Deployment,
) -> None:
    deployment.fake.inject("sendDocument", "ok", *["drop"] * 5)
    assert deployment.cli("run", "--region", "eu", check=False).returncode == 1
    fresh = json.loads(deployment.cli("run", "--region", "eu", "--fresh", "-o", "json").stdout)
    assert fresh["reused_parts"] == 0

    # a database that does not exist: pg_dump fails, nothing is marked complete
    deployment.regions["eu"]["database_url"] = deployment.cluster.dsn("no_such_db")
    deployment.write()
    broken = deployment.cli("run", "--region", "eu", check=False)
    assert broken.returncode == 1 and "no_such_db" in broken.stderr
    statuses = [
        b["status"]
        for b in json.loads(deployment.cli("list", "--all", "-o", "json").stdout)["backups"]
    ]
    assert statuses.count("complete") == 1


def test_two_backups_of_one_region_never_run_at_once(deployment: Deployment) -> None:
    lock = deployment.root / "state" / "backup-tmp" / "eu.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write("pid 4242")
        handle.flush()
        busy = deployment.cli("run", "--region", "eu", check=False)
    assert busy.returncode == 1 and "already running (pid 4242)" in busy.stderr
    assert deployment.fake.calls["sendDocument"] == 0
    deployment.cli("run", "--region", "eu")  # released: runs


def test_the_bot_apis_size_limits_are_reported_clearly(deployment: Deployment) -> None:
    fake = deployment.fake
    fake.upload_limit = 32 * 1024  # below a 64 KiB part: the server answers 413 (JSON)
    too_big = deployment.cli("run", "--region", "eu", check=False)
    assert too_big.returncode == 1 and "too large (HTTP 413)" in too_big.stderr
    assert "lower backup.telegram.part_size" in too_big.stderr
    fake.upload_limit = 50_000_000
    fake.inject("sendDocument", "413-html")  # a proxy's HTML page says the same
    as_html = deployment.cli("run", "--region", "eu", check=False)
    assert as_html.returncode == 1 and "too large (HTTP 413)" in as_html.stderr

    deployment.cli("run", "--region", "eu")
    fake.download_limit = 32 * 1024  # parts above what bots may download
    refused = deployment.cli(
        "restore", "--region", "eu", "--target", fresh_target(deployment.cluster), check=False
    )
    assert refused.returncode == 1 and "file is too big" in refused.stderr
