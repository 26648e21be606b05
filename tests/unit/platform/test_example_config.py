"""examples/platform.yaml is valid, fits its connection budget and holds no secret inline."""

from __future__ import annotations

import re
from pathlib import Path

from skylift.config import ProcessBackend, connection_budget, load_config

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "platform.yaml"


def test_example_is_valid_and_within_its_connection_budget() -> None:
    service = load_config(EXAMPLE, environ={}).config.services["platform"]
    budget = connection_budget(service)
    assert budget is not None and budget.fits
    assert service.replicas == 3 and service.health.path == "/livez"
    assert isinstance(service.backend, ProcessBackend)
    assert "skylift.platform serve --port {port}" in service.backend.command


def test_example_names_secret_files_instead_of_secrets() -> None:
    service = load_config(EXAMPLE, environ={}).config.services["platform"]
    assert isinstance(service.backend, ProcessBackend)
    env = service.backend.env
    assert "SKYLIFT_PLATFORM_DATABASE_URL" not in env
    assert env["SKYLIFT_PLATFORM_DATABASE_URL_FILE"].endswith("database-url")
    assert "SKYLIFT_PLATFORM_ADMIN_TOKEN_FILE" in env
    assert not any(re.search(r"://[^/@\s]+:[^/@\s]+@", v) for v in env.values())
