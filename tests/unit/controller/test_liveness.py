"""Liveness names the loop that stopped making progress, since when and on what it waits."""

from __future__ import annotations

from skylift.controller.liveness import Liveness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Engine:
    """A dependency with one call in flight since t=101."""

    def waits(self) -> list[tuple[str, float]]:
        return [("Docker Engine call 'list'", 101.0)]


def test_a_loop_without_progress_is_named_with_what_it_waits_on() -> None:
    clock = Clock()
    liveness = Liveness(limit=10.0, clock=clock, wall=lambda: 5000.0 + clock.now)
    liveness.register("service loop 'web'")
    liveness.register("service loop 'dock'", Engine())
    liveness.ok("service loop 'web'")
    liveness.ok("service loop 'dock'")
    assert liveness.check()[0]
    clock.now = 101.0
    liveness.failing("service loop 'dock'", "the Docker Engine", "no answer within 5s")
    for t in range(102, 115):
        clock.now = float(t)
        liveness.ok("service loop 'web'")  # the process service keeps ticking
        with liveness.waiting("service loop 'dock'", "the Docker Engine"):  # each retry
            pass
        liveness.failing("service loop 'dock'", "the Docker Engine", "no answer within 5s")
    live, body = liveness.check()
    assert not live
    (stuck,) = body["stuck"]
    assert stuck["loop"] == "service loop 'dock'"
    assert stuck["waiting_on"] == "the Docker Engine"
    assert stuck["waiting_since"] == 5101.0  # the first failure, not the latest
    assert stuck["dependency_call"] == "Docker Engine call 'list'"
    assert stuck["dependency_call_seconds"] == 13.0
    assert "service loop 'dock' made no progress for 14.0s" in body["message"]
    assert body["loops"]["service loop 'web'"]["seconds_since_progress"] == 0.0
    liveness.ok("service loop 'dock'")
    assert liveness.check()[0]


def test_a_loop_that_never_completed_a_pass_is_stuck_after_the_limit() -> None:
    clock = Clock()
    liveness = Liveness(limit=10.0, clock=clock)
    liveness.register("collector")
    with liveness.waiting("collector", "a pass over the metric sources"):
        clock.now += 10.0
        live, body = liveness.check()
    assert not live and body["stuck"][0]["waiting_on"] == "a pass over the metric sources"


def test_extra_parts_report_themselves() -> None:
    liveness = Liveness(limit=10.0, clock=Clock())
    liveness.extra["store writer"] = lambda limit: {"loop": "store writer", "stuck": True}
    live, body = liveness.check()
    assert not live and body["stuck"] == [{"loop": "store writer", "stuck": True}]
    assert body["message"] == "store writer made no progress"
