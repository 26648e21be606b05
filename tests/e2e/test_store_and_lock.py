"""One controller per state store, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import psutil
import pytest

from tests.e2e.harness import Deployment, wait_for, web_service

Deploy = Callable[..., Deployment]


def second_controller_refuses(d: Deployment) -> None:
    result = d.cli("up", check=False, timeout=60)  # foreground: takes the lock first
    assert result.returncode == 1
    assert "already" in result.stderr.lower()
    assert "skylift down" in result.stderr


def test_second_controller_refuses_on_sqlite(deploy: Deploy) -> None:
    d = deploy()
    d.up()
    second_controller_refuses(d)
    assert d.service()["ready"] == 3  # the first one is untouched


def test_postgres_store_runs_restarts_and_locks(postgres_url: str, deploy: Deploy) -> None:
    # postgres_url first: torn down after the deployment, so the database outlives it
    d = deploy({"web": web_service(replicas=2)})
    d.store_url = postgres_url
    d.write()
    d.up()
    before = {r["id"]: r["pid"] for r in d.service()["replicas"]}
    second_controller_refuses(d)
    controller = d.controller_pid()
    os.kill(controller, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(controller), 5, "controller to die")
    d.up()  # the advisory lock died with the controller's connection
    after = {r["id"]: r["pid"] for r in d.service()["replicas"] if r["state"] == "ready"}
    assert after == before
    kinds = [e["kind"] for e in d.events("web")]
    assert kinds.count("replica_started") == 2 and "replicas_adopted" in kinds
    if "password" in postgres_url:
        pytest.fail("the throwaway cluster should use trust auth on loopback")
