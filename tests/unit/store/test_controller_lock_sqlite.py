"""One controller per SQLite state dir: exclusive, and freed when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from skylift.store import ControllerAlreadyRunning, Store

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from skylift.store import Store
    store = Store.open(state_dir=Path(sys.argv[1]))
    lock = store.acquire_controller_lock("other-controller")
    print("locked", flush=True)
    sys.stdin.read()  # hold until killed
    """
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(state_dir=tmp_path) as opened:
        yield opened


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the controller lock of ``tmp_path``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"  # blocks until the lock is taken
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_second_acquire_in_same_process_fails_until_released(store: Store) -> None:
    with store.acquire_controller_lock("first") as lock:
        assert lock.held
        with pytest.raises(ControllerAlreadyRunning) as err:
            store.acquire_controller_lock("second")
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and "'first'" in message
        assert "skylift down" in message
    assert not lock.held
    store.acquire_controller_lock("second").release()


def test_lock_held_by_another_process_names_it(store: Store, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(ControllerAlreadyRunning) as err:
        store.acquire_controller_lock("me")
    assert err.value.holder["pid"] == holder.pid
    assert f"stop process {holder.pid}" in str(err.value)


def test_lock_is_freed_when_holder_is_sigkilled(
    store: Store, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(ControllerAlreadyRunning):
        store.acquire_controller_lock("me")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    with store.acquire_controller_lock("me") as lock:
        assert lock.held
