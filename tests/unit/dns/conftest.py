"""A rendered-only plan of the geo-DNS tests' config (no process, no socket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylift.config import load_config
from skylift.dns.plan import DnsPlan, dns_plan
from tests.geodns_config import default_ports, write_config


@pytest.fixture
def plan(tmp_path: Path) -> DnsPlan:
    loaded = load_config(write_config(tmp_path, **default_ports()))
    return dns_plan(loaded.config, loaded.base_dir)
