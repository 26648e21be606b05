"""The controller lease on a real PostgreSQL: the database's clock judges expiry, a
terminated lock connection is either re-taken by its holder or taken over by a newcomer
(never both), and a newcomer's fast take-over waits out the old holder's local trust."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from skylift.store import Store
from skylift.store.lease import LeaseLost
from tests.polling import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    with (
        Store.open(postgres_url, state_dir=tmp_path) as one,
        Store.open(postgres_url, state_dir=tmp_path) as two,
    ):
        yield one, two


def terminate(url: str, owner: str) -> int:
    """``pg_terminate_backend`` the lease connections of one holder (by application_name)."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
            (f"skylift-controller % owner={owner}",),
        ).fetchall()
    return len(rows)


def test_cut_lock_connection_lets_a_newcomer_in_and_the_holder_learns_it(
    stores: tuple[Store, Store], postgres_url: str
) -> None:
    a = stores[0].controller_lease("a", duration=6.0)
    b = stores[1].controller_lease("b", duration=6.0)
    try:
        assert a.try_take() and a.epoch == 1
        assert not b.try_take()
        assert terminate(postgres_url, "a") >= 1
        assert b.try_take() and b.epoch == 2
        assert b.grace == pytest.approx(2.0)  # a may be alive: b waits out a's local trust
        with pytest.raises(LeaseLost, match="epoch 2"):
            a.renew()
    finally:
        a.release()
        b.release()


def test_cut_lock_connection_is_retaken_by_a_holder_that_renews_first(
    stores: tuple[Store, Store], postgres_url: str
) -> None:
    a = stores[0].controller_lease("a", duration=6.0)
    b = stores[1].controller_lease("b", duration=6.0)
    try:
        assert a.try_take()
        assert terminate(postgres_url, "a") >= 1
        assert a.renew() == 1  # reconnected, took its personal lock again, same epoch
        assert not b.try_take()
        assert b.current is not None and b.current.epoch == 1
    finally:
        a.release()
        b.release()


def test_expiry_is_judged_by_the_database_clock(stores: tuple[Store, Store]) -> None:
    a = stores[0].controller_lease("a", duration=1.5)
    b = stores[1].controller_lease("b", duration=1.5)
    try:
        assert a.try_take()  # then never renewed, its lock kept: a frozen holder
        assert not b.try_take()
        assert b.current is not None and 0 < b.current.expires_in <= 1.5
        wait_for(b.try_take, 10, "the lease to expire by the database's clock")
        assert b.epoch == 2 and b.grace == 0.0
        assert not a.valid()
        with pytest.raises(LeaseLost):
            a.renew()
    finally:
        a.release()
        b.release()
