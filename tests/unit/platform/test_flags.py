"""Percentage rollout by a stable hash of the user id."""

from __future__ import annotations

import uuid

import pytest

from skylift.platform.flags import Flag, bucket, is_on, percent_to_bp

USERS = [str(uuid.UUID(int=i * 7919 + 17, version=4)) for i in range(10_000)]


def test_thirty_percent_reaches_thirty_percent_of_ten_thousand_users_stably() -> None:
    flag = Flag("new-checkout", enabled=True, rollout_bp=percent_to_bp(30))
    on = [u for u in USERS if is_on(flag, u)]
    assert 0.27 * len(USERS) <= len(on) <= 0.33 * len(USERS), len(on)
    assert [u for u in USERS if is_on(flag, u)] == on  # same answer every time


def test_raising_the_rollout_only_adds_users() -> None:
    low = {u for u in USERS if is_on(Flag("f", True, 1000), u)}
    high = {u for u in USERS if is_on(Flag("f", True, 3000), u)}
    assert low < high


def test_flags_bucket_users_independently() -> None:
    a = {u for u in USERS if bucket("a", u) < 5000}
    b = {u for u in USERS if bucket("b", u) < 5000}
    overlap = len(a & b) / len(USERS)
    assert 0.22 < overlap < 0.28  # ~25% if independent, 50% if the same users


def test_disabled_and_bounds() -> None:
    assert not any(is_on(Flag("f", False, 10_000), u) for u in USERS[:100])
    assert all(is_on(Flag("f", True, 10_000), u) for u in USERS[:100])
    assert not any(is_on(Flag("f", True, 0), u) for u in USERS[:100])
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percent_to_bp(120)
