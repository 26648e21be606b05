"""The `dns:` block (each mistake named with its fix) and `skylift dns render|records|status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skylift.cli import main
from skylift.config import ConfigError, load_config
from skylift.dns.plan import DnsPlan
from tests.geodns_config import config_data, default_ports


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "skylift.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def errors(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    return str(caught.value)


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["skylift", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    code = exited.value.code
    return code if isinstance(code, int) else 0


def test_the_plan_defaults_to_the_edges_listen_addresses(plan: DnsPlan, tmp_path: Path) -> None:
    assert plan.probes["eu-west"] == "127.0.0.1:18202"  # the edge itself
    assert plan.addresses["eu-west"] == ("127.0.1.2", "2001:db8:e::2")
    data = config_data(**default_ports())
    del data["dns"]["addresses"]
    from skylift.dns.plan import dns_plan

    loaded = load_config(write(tmp_path, data))
    assert dns_plan(loaded.config, loaded.base_dir).addresses["us"] == ("127.0.0.1",)
    assert plan.state_dir == tmp_path / "state" / "dns"
    assert (plan.interval, plan.fall, plan.rise, plan.timeout) == (0.2, 2, 2, 1.0)


def test_an_edge_on_a_wildcard_address_needs_its_public_address(tmp_path: Path) -> None:
    data = config_data(**default_ports())
    data["regions"]["asia"]["edge"]["listen"] = "0.0.0.0:18204"
    del data["dns"]["addresses"]["asia"]
    message = errors(tmp_path, data)
    assert "dns.addresses.asia is missing" in message
    assert "give the IP clients reach it at" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"zone": "Not A Zone!"}, "invalid dns.zone"),
        ({"addresses": {"mars": ["192.0.2.9"]}}, "dns.addresses names unknown regions ['mars']"),
        ({"addresses": {"us": ["edge.example.com"]}}, "not a list of IP addresses"),
        ({"probe": {"mars": "127.0.0.1:1"}}, "dns.probe names unknown regions"),
        ({"names": ["cc"]}, "pick other names"),
        ({"ttl": 0}, "dns.ttl"),
    ],
)
def test_dns_mistakes_name_the_field_and_the_fix(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    data = config_data(**default_ports())
    data["dns"].update(change)
    assert expected in errors(tmp_path, data)


def test_records_json_shows_the_failover_and_the_untested_cloud_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config_data(**default_ports()))
    assert (
        run_cli(monkeypatch, "dns", "records", "-c", str(path), "--down", "eu-west", "-o", "json")
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["answers"]["DE"]["region"] == "eu-central"
    assert doc["route53"]["Changes"]
    assert doc["cloudflare"]["load_balancers"][0]["country_pools"]["DE"][0] == "<pool:eu-west>"
    assert "untested" in doc["untested"]


def test_render_writes_the_three_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config_data(**default_ports(), geoip_map=None)
    path = write(tmp_path, data)
    assert run_cli(monkeypatch, "dns", "render", "-c", str(path), "-o", "json") == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("pdns_conf", "zones_file", "mmdb"):
        assert Path(out[key]).stat().st_size > 0
    assert out["run"] == f"pdns_server --config-dir={tmp_path / 'state' / 'dns'}"


def test_cli_mistakes_exit_with_their_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config_data(**default_ports()))
    assert run_cli(monkeypatch, "dns", "records", "-c", str(path), "--down", "mars") == 2
    assert run_cli(monkeypatch, "dns", "status", "-c", str(path)) == 1
    assert "is `skylift dns serve` running?" in capsys.readouterr().err
    data = config_data(**default_ports())
    del data["dns"]
    assert run_cli(monkeypatch, "dns", "records", "-c", str(write(tmp_path, data))) == 3
    assert "no `dns:` block" in capsys.readouterr().err
