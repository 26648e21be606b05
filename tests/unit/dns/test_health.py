"""Fall/rise over the edges' checks: one lost probe never moves an answer."""

from __future__ import annotations

from skylift.dns.health import Flip, RegionHealth, healthy, step

REGIONS = ("us", "eu-west")


def rounds(
    results: list[dict[str, bool]], fall: int = 2, rise: int = 2
) -> tuple[dict[str, RegionHealth], list[Flip]]:
    book = {r: RegionHealth() for r in REGIONS}
    flips: list[Flip] = []
    for i, result in enumerate(results):
        book, new = step(book, result, fall=fall, rise=rise, now=float(i))
        flips += new
    return book, flips


def test_a_region_goes_down_after_fall_failed_checks_in_a_row() -> None:
    book, flips = rounds([{"eu-west": False}, {"eu-west": False}])
    assert healthy(book) == {"us"}
    assert flips == [Flip("eu-west", False, first_seen=0.0, at=1.0)]


def test_one_lost_check_moves_nothing() -> None:
    book, flips = rounds([{"eu-west": False}, {"eu-west": True}, {"eu-west": False}])
    assert healthy(book) == {"us", "eu-west"}
    assert flips == []


def test_it_comes_back_after_rise_passed_checks() -> None:
    down = [{"eu-west": False}] * 2
    book, flips = rounds([*down, {"eu-west": True}], rise=2)
    assert healthy(book) == {"us"}
    book, flips = rounds([*down, {"eu-west": True}, {"eu-west": True}], rise=2)
    assert healthy(book) == {"us", "eu-west"}
    assert flips[-1] == Flip("eu-west", True, first_seen=2.0, at=3.0)


def test_a_region_not_checked_this_round_keeps_its_state() -> None:
    book, _ = rounds([{"eu-west": False}, {"eu-west": False}, {"us": True}])
    assert healthy(book) == {"us"}
