from __future__ import annotations

import math

from skylift.plan.growth import DAY
from skylift.plan.probe import Seen, replica_prerequisites, summarize


def test_redis_and_pool_are_seen_in_connections_and_env_names() -> None:
    redis, pool = replica_prerequisites([Seen({"PATH", "REDIS_URL"}, [6379, 5432, 5432])])
    assert redis.met is True and "REDIS_URL" in redis.evidence
    assert pool.met is True and "2 PostgreSQL" in pool.evidence
    redis, pool = replica_prerequisites([Seen({"PATH"}, [6432])])
    assert redis.met is None and pool.met is True and "PgBouncer" in pool.evidence


def test_nothing_visible_is_unknown_never_false() -> None:
    for seen in ([], [Seen(None, None)], [Seen({"PATH"}, [])]):
        redis, pool = replica_prerequisites(seen)
        assert redis.met is None and pool.met is None


def test_summarize_takes_the_recent_peak_and_fits_daily_peaks() -> None:
    now = 40 * DAY
    times = [h * 3600.0 for h in range(40 * 24)]
    values = [
        10 * math.exp(0.01 * t / DAY) * (1 + 0.5 * math.sin(t / DAY * 2 * math.pi)) for t in times
    ]
    seen = summarize(times, values, now)
    assert seen.peak == max(values[-7 * 24 :])
    assert seen.growth is not None and abs(seen.growth.rate - 0.01) < 0.001
    assert len(seen.peaks) == 40


def test_daily_peaks_use_one_resolution_so_finer_recent_buckets_are_not_growth() -> None:
    # flat traffic: hourly buckets for 20 days, then minute buckets with spikes
    times = [h * 3600.0 for h in range(20 * 24)]
    values = [10.0] * len(times)
    minutes = [20 * DAY + m * 60.0 for m in range(8 * 24 * 60)]
    times += minutes
    values += [30.0 if m % 60 == 0 else 9.66 for m in range(len(minutes))]  # hour mean 10
    seen = summarize(times, values, 28 * DAY)
    assert seen.growth is not None and abs(seen.growth.rate) < 1e-3
    assert seen.peak == 30.0
