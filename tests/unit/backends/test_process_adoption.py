"""ProcessBackend without starting anything: adoption checks, validation, no I/O at build."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from skylift.backends import Backend, ProcessBackend
from skylift.config import ProcessBackend as ProcessBackendConfig
from skylift.model import Replica


def make_backend(tmp_path: Path) -> ProcessBackend:
    config = ProcessBackendConfig(command="app --port {port}")
    return ProcessBackend("web", config, tmp_path, tmp_path / "state")


def record_of(pid: int, create_time: float, rid: str = "web-1", service: str = "web") -> Replica:
    return Replica(
        rid,
        service,
        "127.0.0.1",
        20001,
        pid=pid,
        started_at=create_time,
        handle={"pid": str(pid), "pgid": str(pid), "create_time": repr(create_time)},
    )


def test_constructor_does_no_io_and_satisfies_the_protocol(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    assert isinstance(backend, Backend)
    assert not (tmp_path / "state").exists()
    assert backend.log_path(record_of(1, 0.0)) == tmp_path / "state/logs/web/web-1.log"


def test_adopts_a_live_process_with_the_same_start_time(tmp_path: Path) -> None:
    me = psutil.Process()
    record = record_of(me.pid, me.create_time())
    backend = make_backend(tmp_path)
    assert backend.adopt([record]) == [record]
    assert backend.is_alive(record)
    assert backend.exit_code(record) is None  # not our child: unknown


def test_rejects_a_reused_pid_whose_start_time_differs(tmp_path: Path) -> None:
    me = psutil.Process()
    reused = record_of(me.pid, me.create_time() - 3600)  # same PID, started an hour earlier
    backend = make_backend(tmp_path)
    assert backend.adopt([reused]) == []
    assert not backend.is_alive(reused)


def test_rejects_missing_pid_unknown_start_and_other_services(tmp_path: Path) -> None:
    me = psutil.Process()
    gone = record_of(max(psutil.pids()) + 100_000, me.create_time(), rid="gone")
    no_start = Replica("nostart", "web", "127.0.0.1", 20002, pid=os.getpid())
    other = record_of(me.pid, me.create_time(), rid="api-1", service="api")
    assert make_backend(tmp_path).adopt([gone, no_start, other]) == []


async def test_start_validates_before_doing_anything(tmp_path: Path) -> None:
    backend = make_backend(tmp_path)
    with pytest.raises(ValueError, match="runs 'web', not 'api'"):
        await backend.start("api", "api-1")
    with pytest.raises(ValueError, match="invalid replica id"):
        await backend.start("web", "../escape")
    assert not (tmp_path / "state").exists()
