"""Config loading: every error at once, with its path and a hint; env overrides; schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skylift.cli.app import app
from skylift.config import ConfigError, json_schema, load_config
from skylift.units import parse_duration, parse_percent

REPO = Path(__file__).resolve().parents[2]

GOOD = """
project: demo
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 2
    backend:
      command: python app.py --port {port}
      ports: {start: 30000, end: 30010}
    health: {interval: 500ms, fall: 2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "skylift.yaml"
    path.write_text(text)
    return path


def issues(tmp_path: Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    return {i.path: f"{i.message} | {i.hint}" for i in err.value.issues}


def test_good_config_loads_with_units(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, GOOD), environ={})
    web = loaded.config.services["web"]
    assert web.health.interval == 0.5
    assert web.health.fall == 2
    assert web.backend.ports.start == 30000
    assert loaded.state_dir == (tmp_path / ".skylift").resolve()
    assert loaded.store_url.startswith("sqlite:///")


def test_every_error_reported_at_once_with_path_and_hint(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        """
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 1
    backend: {kind: process}
    health: {interval: soon, fal: 2}
    autoscale: {min: 5, max: 2}
""",
    )
    assert "services.web.backend.command" in found
    assert "required" in found["services.web.backend.command"]
    assert "'soon'" in found["services.web.health.interval"]
    assert "30s" in found["services.web.health.interval"]  # the hint shows the spelling
    assert "did you mean 'fall'" in found["services.web.health.fal"]
    assert "lower min or raise max" in found["services.web.autoscale"]
    assert len(found) == 4


def test_port_clash_is_named(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        """
api: {listen: 127.0.0.1:9080}
services:
  web:
    frontend: 127.0.0.1:9080
    backend: {command: "app --port {port}"}
  api:
    frontend: 127.0.0.1:20005
    backend: {command: "app --port {port}", ports: {start: 21000, end: 21010}}
""",
    )
    text = " ".join(found.values())
    assert "port 9080 is used by both api.listen and services.web.frontend" in text
    assert "services.api.frontend port 20005 lies inside services.web.backend.ports" in text


def test_port_clash_reported_beside_field_errors(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        """
services:
  web:
    frontend: 127.0.0.1:8470
    replicas: zero
    backend: {command: "app --port {port}"}
""",
    )
    assert "services.web.replicas" in found
    assert any("port 8470" in v for v in found.values())


def test_command_needs_port_placeholder(tmp_path: Path) -> None:
    found = issues(tmp_path, GOOD.replace("--port {port}", "--port 80"))
    assert "{port}" in found["services.web.backend.command"]


def test_api_must_stay_on_loopback(tmp_path: Path) -> None:
    found = issues(tmp_path, GOOD + "api: {listen: 0.0.0.0:8470}\n")
    assert "127.0.0.1" in found["api.listen"]


def test_env_overrides_yaml(tmp_path: Path) -> None:
    loaded = load_config(
        write(tmp_path, GOOD),
        environ={"SKYLIFT_SERVICES__WEB__REPLICAS": "5", "SKYLIFT_PROJECT": "other"},
    )
    assert loaded.config.services["web"].replicas == 5
    assert loaded.config.project == "other"


def test_env_override_errors_carry_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD), environ={"SKYLIFT_SERVICES__WEB__REPLICAS": "many"})
    assert [i.path for i in err.value.issues] == ["services.web.replicas"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    found = issues(tmp_path, "services:\n  web: [\n")
    assert any(k.startswith("line ") for k in found)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("500ms", 0.5), (7, 7)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", "", "1w", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_percentages() -> None:
    assert parse_percent("70%") == pytest.approx(0.7)
    assert parse_percent(0.25) == 0.25
    with pytest.raises(ValueError, match="percentage"):
        parse_percent("seventy")


def test_committed_schema_is_fresh() -> None:
    committed = json.loads((REPO / "skylift.schema.json").read_text())
    assert committed == json_schema(), (
        "skylift.schema.json is stale: run `skylift config schema > skylift.schema.json`"
    )


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "validate", str(write(tmp_path, GOOD)), "-o", "json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"valid": True, "services": ["web"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("replicas: 2", "replicas: 2\n    colour: blue"))
    result = runner.invoke(app, ["config", "validate", str(bad), "-o", "json"])
    assert result.exit_code == 3
    errors = json.loads(result.stdout)["errors"]
    assert errors[0]["path"] == "services.web.colour"
    assert "unknown key" in errors[0]["message"]


def test_examples_are_valid() -> None:
    for example in sorted((REPO / "examples").glob("*.yaml")):
        if example.name == "prices.yaml":  # a price file (tests/unit/cost/test_prices.py)
            continue
        load_config(example, environ={})


def test_prometheus_queries_need_a_url_and_known_metrics(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        GOOD + "    prometheus: {rps: 'sum(rate(x[1m]))', latency: 'y'}\n",
    )
    assert "services.web.prometheus.latency" in " ".join(found)
    found = issues(tmp_path, GOOD + "    prometheus: {rps: 'sum(rate(x[1m]))'}\n")
    assert any("metrics.prometheus_url" in v for v in found.values())


def test_autoscale_on_cpu_needs_a_cpu_request(tmp_path: Path) -> None:
    policy = "    autoscale: {checks: [{kind: target, metric: cpu, target: 70%}]}\n"
    found = issues(tmp_path, GOOD + policy)
    assert "resources: {cpu: ...}" in found["services.web"]
    loaded = load_config(
        write(tmp_path, GOOD + policy + "    resources: {cpu: 500m}\n"), environ={}
    )
    assert loaded.config.services["web"].resources is not None


def test_container_limits_serve_as_the_request(tmp_path: Path) -> None:
    policy = (
        "    autoscale: {checks: [{kind: target, metric: cpu, target: 70%},"
        " {kind: target, metric: memory, target: 80%}]}\n"
    )
    text = (
        "services:\n  web:\n    frontend: 127.0.0.1:9000\n"
        "    backend: {kind: docker, image: app:1, port: 8080, cpus: 500m, memory: 256Mi}\n"
    )
    service = load_config(write(tmp_path, text + policy), environ={}).config.services["web"]
    assert service.request is not None
    assert (service.request.cpu, service.request.memory) == (0.5, 256 * 2**20)
    own = text + policy + "    resources: {cpu: 250m}\n"
    service = load_config(write(tmp_path, own), environ={}).config.services["web"]
    assert service.request is not None  # resources win field by field
    assert (service.request.cpu, service.request.memory) == (0.25, 256 * 2**20)
    no_limit = text.replace(", memory: 256Mi", "")
    found = issues(tmp_path, no_limit + policy)
    assert "resources: {memory: ...}" in found["services.web"]


def test_up_refuses_a_config_without_services(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "regions:\n  eu:\n    database_url: postgresql://postgres@localhost:5432/app\n",
    )
    result = CliRunner().invoke(app, ["up", "-c", str(path)])
    assert result.exit_code == 3
    assert "no services" in result.output
