"""The replica environment's layers and the log writer's size bound, without processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.backends.base import StartFailed
from skylift.backends.env import base_env, read_env_file, replica_env
from skylift.backends.logwriter import RotatingFile
from skylift.config import ProcessBackend


def test_base_env_takes_only_the_base_and_inherited_names() -> None:
    controller = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "AWS_SECRET_ACCESS_KEY": "x",
        "SKYLIFT_STORE__URL": "postgresql://u:pw@h/db",
        "WANTED": "1",
    }
    assert base_env(controller, ["WANTED", "ABSENT"]) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "WANTED": "1",
    }
    assert base_env({})["PATH"] == os.defpath  # commands still resolve


def test_layers_env_file_then_env_then_skylifts_own(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('export A=file\nB="quoted value"\nC=${HOME}\nBARE\n')
    env = replica_env(
        base={"PATH": "/bin", "A": "base"},
        env_file=path,
        env={"B": "env", "PORT": "1"},
        own={"PORT": "8080"},
    )
    assert env == {"PATH": "/bin", "A": "file", "B": "env", "C": "${HOME}", "PORT": "8080"}
    assert read_env_file(path)["B"] == "quoted value"
    with pytest.raises(StartFailed, match="env_file"):
        read_env_file(tmp_path / "missing")


def test_inherit_env_must_be_names() -> None:
    with pytest.raises(ValueError, match="not an environment variable name"):
        ProcessBackend(command="app {port}", inherit_env=["OK", "NOT-OK"])
    assert ProcessBackend(command="app {port}", log_max_bytes="1Mi").log_max_bytes == 1024**2


@settings(max_examples=50, deadline=None)
@given(
    chunks=st.lists(
        st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\0", b"\n")), max_size=40
    ),
    limit=st.integers(min_value=1, max_value=500),
    backups=st.integers(min_value=1, max_value=3),
)
def test_rotating_file_never_exceeds_its_limit_and_loses_nothing_recent(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes], limit: int, backups: int
) -> None:
    folder = tmp_path_factory.mktemp("log")
    path = folder / "r.log"
    sink = RotatingFile(str(path), limit, backups)
    for chunk in chunks:
        sink.write(chunk)
        files = sorted(folder.iterdir())
        assert len(files) <= 1 + backups
        assert all(f.stat().st_size <= limit for f in files)
    sink.close()
    kept = (
        b"".join(
            (folder / f"r.log.{n}").read_bytes()
            for n in range(backups, 0, -1)
            if (folder / f"r.log.{n}").exists()
        )
        + path.read_bytes()
    )
    assert b"".join(chunks).endswith(kept)  # what is kept is the newest output, in order
