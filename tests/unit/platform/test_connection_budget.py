"""The config validator's connection budget: max replicas x pool size vs the server's room."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from skylift.config import ConfigError, connection_budget, load_config


def _write(tmp_path: Path, **service: Any) -> Path:
    base = {"frontend": "127.0.0.1:18080", "backend": {"command": "app --port {port}"}}
    path = tmp_path / "skylift.yaml"
    path.write_text(yaml.safe_dump({"services": {"web": {**base, **service}}}))
    return path


def test_over_budget_with_autoscale_names_both_numbers_path_and_fix(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        replicas=2,
        autoscale={"min": 1, "max": 10},
        database={"max_connections": 100, "pool_size": 20, "reserve": 5},
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (issue,) = caught.value.issues
    assert issue.path == "services.web.database"
    assert "max replicas x pool size = 200 exceeds max_connections - reserve = 95" in issue.message
    assert "lower the max replicas to 4" in issue.message
    assert "lower database.pool_size to 9" in issue.message


def test_without_autoscale_the_replica_count_is_the_max(tmp_path: Path) -> None:
    over = _write(tmp_path, replicas=6, database={"max_connections": 50, "pool_size": 10})
    with pytest.raises(ConfigError, match="= 60 exceeds max_connections - reserve = 45"):
        load_config(over, environ={})
    fits = _write(tmp_path, replicas=4, database={"max_connections": 50, "pool_size": 10})
    budget = connection_budget(load_config(fits, environ={}).config.services["web"])
    assert budget is not None and budget.fits
    assert (budget.needed, budget.available, budget.replicas_allowed) == (40, 45, 4)


def test_env_override_is_checked_too(tmp_path: Path) -> None:
    path = _write(tmp_path, replicas=3, database={"max_connections": 50, "pool_size": 10})
    with pytest.raises(ConfigError, match="= 50 exceeds"):
        load_config(path, environ={"SKYLIFT_SERVICES__WEB__REPLICAS": "5"})
