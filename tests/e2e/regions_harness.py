"""A three-region file on loopback (``a``, ``b`` in zone ``x``; ``c`` in zone ``y``) and the
CLI run against it, for the regions end-to-end tests.

Each region runs the demo app with process replicas; ``c`` serves its API over
TLS with a CA made here. ``edge=False`` runs the regions without their edges
(``SKYLIFT_REGION_EDGE=off``).
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

import psutil
import pytest
import yaml

from tests.e2e.harness import DEMO_APP
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

    def __init__(self, root: Path, *, edge: bool = False, **settings: Any) -> None:
        self.root = root
        self.edge = edge
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
            **settings,
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
            env={
                **os.environ,
                "SKYLIFT_E2E_RUN": self.run_tag,
                "SKYLIFT_REGION_EDGE": "on" if self.edge else "off",
            },
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

    def edge_url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.base + OFFSETS[region] + 5}"


@contextlib.contextmanager
def running_regions(root: Path, **kwargs: Any) -> Iterator[Regions]:
    deployment = Regions(root, **kwargs)
    try:
        yield deployment
    finally:
        deployment.teardown()


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Regions]:
    with running_regions(tmp_path) as deployment:
        yield deployment
