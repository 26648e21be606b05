"""Regions end to end through the real CLI: one controller process per region on loopback.

Three regions (``a`` and ``b`` in zone ``x``, ``c`` in zone ``y``) run the demo
app with process replicas; ``c`` serves its API over TLS with a CA made here.
The edge is not started (``SKYLIFT_REGION_EDGE=off``): it is another slice's
part, tested with it once merged; what is tested here is the orchestration:
`up --region all --detach`, `status -o json`, `down --region X` leaving the
others running, `up --region X --detach` bringing it back.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.e2e.harness import DEMO_APP, wait_for
from tests.ports import free_port_block

OFFSETS = {"a": 0, "b": 50, "c": 100}


def make_ca(directory: Path) -> dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skylift test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "region c api")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = {
        "ca_file": ("ca.pem", ca_cert.public_bytes(pem)),
        "tls_cert_file": ("api.pem", cert.public_bytes(pem)),
        "tls_key_file": (
            "api.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
    }
    out = {}
    for field, (name, data) in files.items():
        (directory / name).write_bytes(data)
        out[field] = name
    return out


class Regions:
    """A three-region file on loopback and the CLI run against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_tag = uuid.uuid4().hex
        base = free_port_block(150)
        self.base = base
        tls = make_ca(root)
        self.tls = tls
        regions: dict[str, Any] = {}
        for name, zone in (("a", "x"), ("b", "x"), ("c", "y")):
            offset = OFFSETS[name]
            regions[name] = {
                "zone": zone,
                "edge": {"listen": f"127.0.0.1:{base + offset + 5}"},
                "database_url": f"postgresql://skylift@127.0.0.1:1/{name}",
                "port_offset": offset,
                "nearest": [n for n in OFFSETS if n != name],
            }
        regions["c"]["api"] = {"listen": f"127.0.0.1:{base + 100}", **tls}
        self.config = {
            "project": "rg",
            "state_dir": "state",
            "interval": "500ms",
            "api": {"listen": f"127.0.0.1:{base}"},
            "haproxy": {"metrics": f"127.0.0.1:{base + 1}"},
            "edge": {"service": "web", "default_region": "a"},
            "services": {
                "web": {
                    "frontend": f"127.0.0.1:{base + 2}",
                    "replicas": 1,
                    "backend": {
                        "kind": "process",
                        "command": f"{sys.executable} {DEMO_APP} --port {{port}} "
                        "--replica {replica}",
                        "ports": {"start": base + 10, "end": base + 19},
                        "inherit_env": ["SKYLIFT_E2E_RUN"],
                    },
                    "health": {"path": "/healthz", "interval": "500ms", "fall": 2, "rise": 1},
                    "drain_timeout": "2s",
                    "stop_grace": "3s",
                    "start_timeout": "20s",
                }
            },
            "regions": regions,
        }
        self.path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def path(self) -> Path:
        return self.root / "regions.yaml"

    def frontend(self, region: str) -> str:
        return f"http://127.0.0.1:{self.base + OFFSETS[region] + 2}/"

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> Any:
        result = subprocess.run(
            [sys.executable, "-m", "skylift", *args, "-c", str(self.path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env={**os.environ, "SKYLIFT_E2E_RUN": self.run_tag, "SKYLIFT_REGION_EDGE": "off"},
        )
        if check and result.returncode != 0:
            logs = "\n".join(
                f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                for p in sorted((self.root / "state").glob("*/controller.log"))
            )
            raise AssertionError(
                f"skylift {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}"
                f"\nstderr:\n{result.stderr}\n{logs}"
            )
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "-o", "json").stdout)["regions"]  # type: ignore[no-any-return]

    def teardown(self) -> None:
        try:
            self.cli("down", "--region", "all", check=False, timeout=90)
        finally:
            for proc in psutil.process_iter(["pid"]):
                try:
                    if proc.environ().get("SKYLIFT_E2E_RUN") == self.run_tag:
                        proc.send_signal(signal.SIGKILL)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            for pidfile in (self.root / "state").glob("*/haproxy.pid"):
                for pid in pidfile.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Regions]:
    deployment = Regions(tmp_path)
    try:
        yield deployment
    finally:
        deployment.teardown()


def _replica_pids(entry: dict[str, Any]) -> set[int]:
    return {r["pid"] for r in entry["services"]["web"]["replicas"] if r["state"] == "ready"}


def test_up_all_status_down_one_up_again(regions: Regions) -> None:
    refused = regions.cli("up", "--detach", check=False)
    assert refused.returncode == 2 and "pass --region" in refused.stderr

    regions.cli("up", "--region", "all", "--detach", "--timeout", "60", timeout=120)
    status = regions.status()
    assert set(status) == {"a", "b", "c"}
    for name, entry in status.items():
        assert entry["zone"] == ("y" if name == "c" else "x")
        assert entry["edge"] == f"127.0.0.1:{regions.base + OFFSETS[name] + 5}"
        assert entry["healthy"] is True, entry
        web = entry["services"]["web"]
        assert web["ready"] == web["desired"] == 1
        assert web["frontend"] == f"127.0.0.1:{regions.base + OFFSETS[name] + 2}"
        assert httpx.get(regions.frontend(name), timeout=5, trust_env=False).status_code == 200
    # each region is its own controller process with its own state dir, lock and token
    pids = {int((regions.root / "state" / n / "controller.pid").read_text()) for n in OFFSETS}
    assert len(pids) == 3
    table = regions.cli("status").stdout
    assert "a " in table and "healthy" in table

    # region c's API is TLS only, verified with its CA, and still needs the token
    c_api = f"127.0.0.1:{regions.base + 100}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{c_api}/api/v1/services", timeout=3, trust_env=False)
    ca = str(regions.root / regions.tls["ca_file"])
    anonymous = httpx.get(f"https://{c_api}/api/v1/services", verify=ca, timeout=3, trust_env=False)
    assert anonymous.status_code == 401
    with pytest.raises(httpx.ConnectError):  # a client without the CA refuses the certificate
        httpx.get(f"https://{c_api}/livez", timeout=3, trust_env=False)

    kept = {n: _replica_pids(status[n]) for n in ("a", "c")}
    down = regions.cli("down", "--region", "b", timeout=120)
    assert "region b: stopped" in down.stdout
    after = regions.status()
    assert after["b"]["healthy"] is False and after["b"]["error"].startswith("unreachable: ")
    for name in ("a", "c"):
        assert after[name]["healthy"] is True
        assert _replica_pids(after[name]) == kept[name]  # untouched by b's stop
    with pytest.raises(httpx.TransportError):
        httpx.get(regions.frontend("b"), timeout=2, trust_env=False)

    regions.cli("up", "--region", "b", "--detach", "--timeout", "60", timeout=120)
    back = regions.status()
    assert all(entry["healthy"] for entry in back.values()), back
    assert _replica_pids(back["a"]) == kept["a"]
    wait_for(
        lambda: httpx.get(regions.frontend("b"), timeout=2, trust_env=False).status_code == 200,
        10,
        "region b serving again",
    )
