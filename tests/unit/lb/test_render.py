"""Golden-file tests of the pure renderer; ``UPDATE_GOLDEN=1`` rewrites the files."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from skylift.lb.render import (
    CheckSpec,
    HAProxySpec,
    ServerSpec,
    ServiceSpec,
    haproxy_time,
    read_fingerprint,
    render_config,
    server_keywords,
    structure_fingerprint,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "haproxy"

WEB = ServiceSpec(
    name="web",
    bind="0.0.0.0:8080",
    check=CheckSpec(path="/healthz", inter=2.0, timeout=1.0, fall=3, rise=2, slowstart=5.0),
    servers=(
        ServerSpec("web-1", "127.0.0.1:20000"),
        ServerSpec("web-2", "127.0.0.1:20001", weight=50),
    ),
)
API = ServiceSpec(
    name="api",
    bind="127.0.0.1:8081",
    check=CheckSpec(path="/ready", inter=0.5, timeout=0.25, fall=2, rise=1, slowstart=0.0),
)

CASES = {
    "minimal": HAProxySpec(state_dir="/var/lib/skylift"),
    "two_services_logging": HAProxySpec(
        state_dir="/var/lib/skylift",
        metrics_bind="127.0.0.1:9405",
        maxconn=2000,
        timeout_connect=1.5,
        timeout_client=60.0,
        timeout_server=45.0,
        log_socket="/var/lib/skylift/haproxy-log.sock",
        services=(WEB, API),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    text = render_config(CASES[name])
    path = GOLDEN / f"{name}.cfg"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"regenerate with UPDATE_GOLDEN=1 if intended: {path}"


def test_render_is_deterministic() -> None:
    spec = CASES["two_services_logging"]
    assert render_config(spec) == render_config(spec)


def test_admin_socket_is_private_and_state_survives_reload() -> None:
    text = render_config(CASES["minimal"])
    assert "stats socket /var/lib/skylift/haproxy.sock mode 600 level admin" in text
    assert "server-state-file /var/lib/skylift/server-state" in text
    assert "load-server-state-from-file global" in text
    assert "master-worker" in text


def test_no_logging_without_socket() -> None:
    text = render_config(CASES["minimal"])
    assert "log-format" not in text and "\n    log " not in text


def test_fingerprint_ignores_servers_only() -> None:
    spec = CASES["two_services_logging"]
    fewer = replace(spec, services=(replace(WEB, servers=()), API))
    assert structure_fingerprint(spec) == structure_fingerprint(fewer)
    moved = replace(spec, services=(replace(WEB, bind="0.0.0.0:9090"), API))
    assert structure_fingerprint(spec) != structure_fingerprint(moved)
    slower = replace(spec, timeout_server=10.0)
    assert structure_fingerprint(spec) != structure_fingerprint(slower)
    assert read_fingerprint(render_config(spec)) == structure_fingerprint(spec)
    assert read_fingerprint("global\n") is None


def test_runtime_keywords_spell_out_default_server() -> None:
    """`add server` inherits nothing, so it must carry every default-server keyword."""
    kw = server_keywords(WEB.check, 100)
    assert kw == "check inter 2s fall 3 rise 2 slowstart 5s pool-purge-delay 1s weight 100"
    line = next(
        text
        for text in render_config(CASES["two_services_logging"]).splitlines()
        if "default-server" in text and "inter 2s" in text
    )
    for word in line.split()[1:]:
        assert word in kw.split()


@pytest.mark.parametrize(
    ("seconds", "text"), [(2.0, "2s"), (0.3, "300ms"), (1.5, "1500ms"), (60.0, "60s"), (0, "0s")]
)
def test_haproxy_time(seconds: float, text: str) -> None:
    assert haproxy_time(seconds) == text


@pytest.mark.parametrize(
    "bad",
    [
        replace(CASES["minimal"], state_dir="relative/dir"),
        replace(CASES["minimal"], services=(replace(WEB, name="web\n  bind x"),)),
        replace(CASES["minimal"], services=(WEB, WEB)),
        replace(CASES["minimal"], services=(replace(WEB, bind="8080"),)),
        replace(
            CASES["minimal"],
            services=(replace(WEB, servers=(ServerSpec("a b", "127.0.0.1:1"),)),),
        ),
        replace(
            CASES["minimal"],
            services=(replace(WEB, check=replace(WEB.check, path="/x y")),),
        ),
    ],
)
def test_rejects_values_that_would_inject_config(bad: HAProxySpec) -> None:
    with pytest.raises(ValueError):
        render_config(bad)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_files_pass_haproxy_check(name: str, tmp_path: Path) -> None:
    """The goldens are valid HAProxy 2.6 (state dir swapped for a real one)."""
    text = (GOLDEN / f"{name}.cfg").read_text().replace("/var/lib/skylift", str(tmp_path))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    out = subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_sockets_of_a_deep_state_dir_go_to_a_short_private_dir() -> None:
    from skylift.lb.render import SOCKET_PATH_MAX, socket_dir

    shallow = "/var/lib/skylift/web"
    assert socket_dir(shallow) == shallow
    deep = "/tmp/pytest-of-root/pytest-338/popen-gw0/" + "x" * 60 + "/state/a/edge"
    short = socket_dir(deep)
    assert len(short + "/haproxy.sock") <= SOCKET_PATH_MAX
    assert short == socket_dir(deep) != socket_dir(deep + "2")  # stable, one per state dir
    text = render_config(replace(CASES["minimal"], state_dir=deep))
    assert f"stats socket {short}/haproxy.sock" in text
