"""Environment and log hygiene, driven as an operator would: `skylift up`, scale, `down`.

Finding 8: a replica inherited the controller's whole environment (tokens, store
URLs with passwords). Item 6: replica logs were never rotated nor removed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Deployment, wait_for, web_service

Deploy = Callable[..., Deployment]


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_controller_secrets_never_reach_a_replica(
    deploy: Deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = web_service(replicas=2)
    backend = web["backend"]
    backend["inherit_env"] = [*backend["inherit_env"], "SKYLIFT_TEST_PASSED"]
    backend["env"] = {"FROM_ENV": "env value"}
    backend["env_file"] = "app.env"
    backend["log_max_bytes"] = "64Ki"
    d = deploy({"web": web})
    (d.root / "app.env").write_text("FROM_FILE='file value'\n")
    d.write()
    # what `skylift up` runs with: a secret, a store password, one variable meant to pass
    monkeypatch.setenv("SKYLIFT_TEST_SECRET", "s3cr3t-token")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pa55word@db/app")
    monkeypatch.setenv("SKYLIFT_TEST_PASSED", "passed on purpose")
    d.up(timeout=60)
    replicas = d.service()["replicas"]
    assert len(replicas) == 2
    for replica in replicas:
        env = environ_of(replica["pid"])
        assert "SKYLIFT_TEST_SECRET" not in env and "DATABASE_URL" not in env
        assert not any("s3cr3t" in v or "pa55word" in v for v in env.values())
        assert env["SKYLIFT_TEST_PASSED"] == "passed on purpose"
        assert env["FROM_ENV"] == "env value" and env["FROM_FILE"] == "file value"
        assert env["SKYLIFT_REPLICA"] == replica["id"]
    controller = environ_of(d.controller_pid())
    assert controller["SKYLIFT_TEST_SECRET"] == "s3cr3t-token"  # the controller had it

    logs = d.state_dir / "logs" / "web"
    first = replicas[0]["id"]
    assert (logs / f"{first}.log").exists()
    d.cli("scale", "web", "1")
    wait_for(lambda: len(d.service()["replicas"]) == 1, 30, "scale in to 1")
    (left,) = [r["id"] for r in d.service()["replicas"]]
    gone = next(r["id"] for r in replicas if r["id"] != left)
    wait_for(lambda: not list(logs.glob(f"{gone}.log*")), 15, "the stopped replica's logs")
    assert (logs / f"{left}.log").exists()
    d.cli("down")
    wait_for(lambda: not list(logs.glob("*.log*")), 15, "every log removed by down")
