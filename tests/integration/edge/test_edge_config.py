"""Every variant of the rendered edge is a configuration HAProxy itself accepts."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from edge_world import TOPOLOGY, spki

from skylift.edge.render import render_edge
from skylift.edge.spec import EdgeSpec
from tests.ports import free_port


@pytest.mark.parametrize(
    "variant",
    ["latency", "geo_with_geoip_and_metrics", "no_keys_no_peers_trusted", "single_region"],
)
def test_haproxy_accepts_the_rendered_edge(tmp_path: Path, variant: str) -> None:
    geo = tmp_path / "geo.map"
    geo.write_text("192.0.2.0/24 FR\n2001:db8::/32 JP\n")
    spec = EdgeSpec(
        region="eu-west",
        topology=TOPOLOGY,
        listen=f"127.0.0.1:{free_port()}",
        local="127.0.0.1:9",
        peers={"us": "127.0.0.1:9", "eu-central": "127.0.0.1:9", "asia": "127.0.0.1:9"},
        trusted_peers=frozenset({"127.0.0.1", "10.0.0.0/8"}),
        state_dir=tmp_path / "edge",
        token_keys={
            "k1": spki(ec.generate_private_key(ec.SECP256R1())),
            "-k2": spki(ec.generate_private_key(ec.SECP256R1())),  # a thumbprint may start with -
        },
        extra_countries={"10.0.0.0/8": "DE"},
    )
    if variant == "geo_with_geoip_and_metrics":
        spec = replace(
            spec,
            topology=replace(TOPOLOGY, mode="geo"),
            geoip_map=geo,
            metrics_listen=f"127.0.0.1:{free_port()}",
        )
    elif variant == "no_keys_no_peers_trusted":
        spec = replace(spec, token_keys={}, trusted_peers=frozenset())
    elif variant == "single_region":
        from skylift.regions.rules import RegionFacts, Topology

        spec = replace(
            spec,
            region="solo",
            topology=Topology((RegionFacts("solo", "z"),), default="solo"),
            peers={},
        )
    files = render_edge(spec)
    for rel, text in files.files.items():
        path = spec.state_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (spec.state_dir / "server-state").write_text("1\n")
    (spec.state_dir / "haproxy.cfg").write_text(files.config)
    out = subprocess.run(
        ["haproxy", "-c", "-f", str(spec.state_dir / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # HAProxy only warns about an unreadable key or map file: no warning at all is accepted
    assert out.returncode == 0 and "WARNING" not in out.stdout + out.stderr, out
