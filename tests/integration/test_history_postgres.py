"""Load history and scaling events on a real PostgreSQL: the SQLite tests, re-run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skylift.store import Store
from tests.unit.store import test_history as on_sqlite


@pytest.fixture
def store(postgres_url: str, tmp_path: Path) -> Iterator[Store]:
    with Store.open(postgres_url, state_dir=tmp_path, clock=lambda: 5000.0) as opened:
        yield opened


def test_append_merges_partial_buckets_and_load_filters(store: Store) -> None:
    on_sqlite.test_append_merges_partial_buckets_and_load_filters(store)


def test_roll_up_merges_old_fine_buckets_and_deletes_expired(store: Store) -> None:
    on_sqlite.test_roll_up_merges_old_fine_buckets_and_deletes_expired(store)


def test_roll_up_keeps_fine_buckets_of_the_open_coarse_hour(store: Store) -> None:
    on_sqlite.test_roll_up_keeps_fine_buckets_of_the_open_coarse_hour(store)


def test_scaling_events_add_list_remove(store: Store) -> None:
    on_sqlite.test_scaling_events_add_list_remove(store)
