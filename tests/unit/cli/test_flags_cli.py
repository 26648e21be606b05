"""``skylift flags diff``: which database each region's flags come from, and usage errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from skylift.cli.app import app
from skylift.cli.flags import flags_database
from skylift.config import load_config
from skylift.regions.database import Promotion
from skylift.regions.promotion import region_state_dir, write_local_promotion

CONFIG = """
state_dir: state
regions:
  eu-west:
    database_url: postgresql://app@db.eu-west:5432/app
    standby: {region: eu-central, database_url: 'postgresql://app@db.eu-central:5433/app'}
  eu-central:
    database_url: postgresql://app@db.eu-central:5432/app
"""


def test_a_promoted_regions_flags_are_read_from_its_promoted_standby(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    loaded = load_config(path, environ={})
    assert flags_database(loaded, "eu-west") == "postgresql://app@db.eu-west:5432/app"
    state = region_state_dir(loaded.config, loaded.base_dir, "eu-west")
    write_local_promotion(state, Promotion("eu-west", "eu-central", 1.0, True))
    assert flags_database(loaded, "eu-west") == "postgresql://app@db.eu-central:5433/app"
    assert flags_database(loaded, "eu-central") == "postgresql://app@db.eu-central:5432/app"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    runner = CliRunner()
    unknown = runner.invoke(app, ["flags", "diff", "-c", str(path), "-r", "eu-west", "-r", "us"])
    assert unknown.exit_code == 2 and "--region us: not in" in unknown.stderr
    alone = runner.invoke(app, ["flags", "diff", "-c", str(path), "-r", "eu-west"])
    assert alone.exit_code == 2 and "at least two regions" in alone.stderr
